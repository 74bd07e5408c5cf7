// The network teacher; see remote_teacher.h. Synchronous unary calls on a channel of its own: the fine-tuning
// loop waits for its targets anyway, and a step's batch is a handful of requests at most.
#include "collab/remote_teacher.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "collab/cloud_link.h"
#include "collab/log.h"
#include "collab/topk_eval.h"
#include "engine/error.h"
#include "tandem/v1/collab.grpc.pb.h"

namespace tandem::collab {

struct remote_teacher::impl {
    remote_teacher_config cfg;
    int32_t n_vocab = 0;
    uint64_t fingerprint = 0;
    std::string route_key = make_route_key();
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Collab::Stub> stub;
    v1::TopKResponse limits;  // the probe's reply: the server's limits
    remote_teacher_counters counters;

    std::string where() const { return "the distillation server " + cfg.address; }

    v1::TopKResponse call(const v1::TopKRequest& req) {
        auto delay = cfg.backoff_initial;
        for (int32_t attempt = 1;; ++attempt) {
            grpc::ClientContext ctx;
            if (!cfg.token.empty()) ctx.AddMetadata("authorization", "Bearer " + cfg.token);
            ctx.AddMetadata(route_header, route_key);
            ctx.set_deadline(std::chrono::system_clock::now() + cfg.timeout);
            v1::TopKResponse resp;
            const grpc::Status st = stub->TopK(&ctx, req, &resp);
            if (st.ok()) {
                ++counters.calls;
                counters.bytes_sent += req.ByteSizeLong();
                counters.bytes_received += resp.ByteSizeLong();
                return resp;
            }
            const auto code = st.error_code();
            const std::string msg = st.error_message();
            if (code != grpc::StatusCode::UNAVAILABLE && code != grpc::StatusCode::DEADLINE_EXCEEDED) {
                // The server answered: retrying the same request would get the same answer (a quota is the
                // exception, but a training loop that outruns its quota should say so, not stall).
                const bool callers_fault =
                    code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::FAILED_PRECONDITION ||
                    code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED;
                throw error(callers_fault ? TANDEM_ERR_INVALID_ARGUMENT : TANDEM_ERR_IO,
                            where() + " refused the request: " + msg);
            }
            if (attempt >= cfg.attempts) {
                throw error(TANDEM_ERR_IO,
                            where() + " is unreachable after " + std::to_string(attempt) + " attempt(s): " + msg);
            }
            ++counters.retries;
            log().warn("{}: {} (attempt {} of {}); retrying in {} ms", where(), msg, attempt, cfg.attempts,
                       delay.count());
            std::this_thread::sleep_for(delay);
            delay = std::min(delay * 2, cfg.backoff_max);
        }
    }

    v1::TopKRequest request(int32_t k) const {
        v1::TopKRequest r;
        r.set_tokenizer_fingerprint(fingerprint);
        r.set_vocab_size(uint32_t(n_vocab));
        r.set_top_k(uint32_t(std::max(k, 0)));
        return r;
    }

    // Sequences of n_tok tokens per request within the server's limits.
    int64_t sequences_per_call(int32_t n_tok, int32_t k) const {
        if (uint32_t(n_tok) > limits.max_sequence_tokens()) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        where() + " evaluates sequences of at most " + std::to_string(limits.max_sequence_tokens()) +
                            " tokens; use --ctx " + std::to_string(limits.max_sequence_tokens()) + " or less");
        }
        if (uint32_t(k) > limits.max_top_k()) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        where() + " allows a top-k of at most " + std::to_string(limits.max_top_k()));
        }
        // The reply's size bound (topk_reply_bytes) solved for the positions that fit the server's message limit.
        const int64_t fit = (int64_t(limits.max_message_bytes()) - 256) / (9 * int64_t(k));
        const int64_t positions = std::min<int64_t>(limits.max_tokens(), std::max<int64_t>(fit, 0));
        const int64_t n = std::min<int64_t>(limits.max_sequences(), positions / n_tok);
        if (n < 1) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, where() + " cannot answer one sequence of " +
                                                         std::to_string(n_tok) + " tokens with top-k " +
                                                         std::to_string(k) + " within its limits");
        }
        return n;
    }
};

remote_teacher::remote_teacher(const remote_teacher_config& cfg, int32_t n_vocab, uint64_t vocab_fingerprint)
    : p_(std::make_unique<impl>()) {
    p_->cfg = cfg;
    p_->n_vocab = n_vocab;
    p_->fingerprint = vocab_fingerprint;
    if (cfg.attempts < 1) throw error(TANDEM_ERR_INVALID_ARGUMENT, "remote teacher: attempts must be at least 1");
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (!cfg.tls_ca.empty()) {
        std::ifstream f(cfg.tls_ca, std::ios::binary);
        if (!f) throw error(TANDEM_ERR_IO, "cannot read the TLS CA file '" + cfg.tls_ca + "'");
        std::stringstream ss;
        ss << f.rdbuf();
        grpc::SslCredentialsOptions o;
        o.pem_root_certs = ss.str();
        creds = grpc::SslCredentials(o);
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(cfg.max_message_bytes);
    args.SetMaxSendMessageSize(cfg.max_message_bytes);
    // Our own back-off paces the retries; gRPC's default reconnect back-off (up to 2 minutes) would outlast it.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    p_->channel = grpc::CreateCustomChannel(cfg.address, creds, args);
    p_->stub = v1::Collab::NewStub(p_->channel);
    p_->limits = p_->call(p_->request(0));
    log().info("distillation teacher {}: top-k up to {}, {} sequences / {} tokens per request", cfg.address,
               p_->limits.max_top_k(), p_->limits.max_sequences(), p_->limits.max_tokens());
}

remote_teacher::~remote_teacher() = default;

int32_t remote_teacher::n_vocab() const { return p_->n_vocab; }

// The probe succeeded, so the server's vocabulary is the student's.
uint64_t remote_teacher::vocab_fingerprint() const { return p_->fingerprint; }

const remote_teacher_counters& remote_teacher::counters() const { return p_->counters; }

void remote_teacher::top_k(const train_batch& b, int32_t k, std::vector<int32_t>& ids, std::vector<float>& p) {
    if (k < 1 || k > p_->n_vocab)
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "distillation top-k must be in [1, n_vocab]");
    const int32_t T = b.n_tok;
    ids.assign(size_t(b.rows()) * size_t(k), 0);
    p.assign(size_t(b.rows()) * size_t(k), 0.f);
    if (b.rows() == 0) return;
    // A sequence with no target anywhere (a padding slot of the last batch) is masked by the trainer whatever its
    // targets are: it is left at zeros rather than sent.
    const bool has_targets = b.target_p.size() == size_t(b.rows()) * size_t(b.k);
    std::vector<int32_t> live;
    for (int32_t s = 0; s < b.n_seq; ++s) {
        bool any = !has_targets;
        for (size_t i = size_t(s) * T * b.k; !any && i < size_t(s + 1) * T * b.k; ++i) any = b.target_p[i] > 0;
        if (any) live.push_back(s);
    }
    const int64_t per_call = p_->sequences_per_call(T, k);
    for (size_t first = 0; first < live.size(); first += size_t(per_call)) {
        const size_t n = std::min(live.size() - first, size_t(per_call));
        v1::TopKRequest req = p_->request(k);
        for (size_t i = 0; i < n; ++i) {
            const int32_t* t = b.tokens.data() + size_t(live[first + i]) * size_t(T);
            req.add_sequences()->mutable_tokens()->Add(t, t + T);
        }
        const v1::TopKResponse resp = p_->call(req);
        const size_t want = n * size_t(T) * size_t(k);
        if (resp.top_k() != uint32_t(k) || size_t(resp.ids_size()) != want || size_t(resp.probs_size()) != want) {
            throw error(TANDEM_ERR_FORMAT, p_->where() + " sent a malformed reply (" + std::to_string(resp.ids_size()) +
                                               " ids, " + std::to_string(resp.probs_size()) + " probabilities; " +
                                               std::to_string(want) + " expected)");
        }
        for (size_t i = 0; i < n; ++i) {
            const size_t dst = size_t(live[first + i]) * size_t(T) * size_t(k), src = i * size_t(T) * size_t(k);
            for (size_t j = 0; j < size_t(T) * size_t(k); ++j) {
                const int32_t id = resp.ids(int(src + j));
                const float q = resp.probs(int(src + j));
                if (id < 0 || id >= p_->n_vocab || !std::isfinite(q) || q < 0.f || q > 1.f) {
                    throw error(TANDEM_ERR_FORMAT, p_->where() + " sent an invalid entry (token " + std::to_string(id) +
                                                       ", probability " + std::to_string(q) + ")");
                }
                ids[dst + j] = id;
                p[dst + j] = q;
            }
        }
    }
}

namespace {

tandem_status failure(const std::exception& e, tandem_status st, char* msg, size_t cap) {
    if (cap > 0) std::snprintf(msg, cap, "%s", e.what());
    return st;
}

// Exceptions must not cross the C callback boundary: each becomes a status and its message.
template <class F>
tandem_status guarded(char* msg, size_t cap, F&& f) {
    try {
        f();
        return TANDEM_OK;
    } catch (const error& e) {
        return failure(e, e.status(), msg, cap);
    } catch (const std::exception& e) {
        return failure(e, TANDEM_ERR_INTERNAL, msg, cap);
    }
}

tandem_status bind_remote(void* user, int32_t n_vocab, uint64_t fingerprint, char* msg, size_t cap) {
    auto& b = *static_cast<remote_teacher_binding*>(user);
    return guarded(msg, cap, [&] { b.teacher = std::make_unique<remote_teacher>(b.cfg, n_vocab, fingerprint); });
}

tandem_status remote_top_k(void* user, const int32_t* tokens, int32_t n_seq, int32_t n_tok, int32_t k, int32_t* ids,
                           float* p, char* msg, size_t cap) {
    auto& b = *static_cast<remote_teacher_binding*>(user);
    return guarded(msg, cap, [&] {
        if (!b.teacher) throw error(TANDEM_ERR_INVALID_ARGUMENT, "the remote teacher is not bound");
        train_batch batch;
        batch.n_seq = n_seq, batch.n_tok = n_tok;
        batch.tokens.assign(tokens, tokens + batch.rows());
        std::vector<int32_t> out_ids;
        std::vector<float> out_p;
        b.teacher->top_k(batch, k, out_ids, out_p);
        std::copy(out_ids.begin(), out_ids.end(), ids);
        std::copy(out_p.begin(), out_p.end(), p);
    });
}

}  // namespace

tandem_teacher c_teacher(remote_teacher_binding& b) {
    tandem_teacher t{};
    t.user = &b;
    t.bind = bind_remote;
    t.top_k = remote_top_k;
    return t;
}

}  // namespace tandem::collab
