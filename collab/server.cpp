// The verification service; see server.h. Threading: gRPC's synchronous server runs each call on its own
// thread; a verify stream's thread validates a request, hands it to the scheduler and blocks until the
// batched pass that verified it is done. A session's mutex serialises its requests (and closing).
#include "collab/server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "collab/log.h"
#include "collab/topk_eval.h"
#include "engine/error.h"
#include "tandem/v1/collab.grpc.pb.h"

namespace tandem::collab {

namespace {

using grpc::Status;
using grpc::StatusCode;

std::string read_file(const std::string& path, const char* what) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw error(TANDEM_ERR_IO, std::string("cannot read the TLS ") + what + " file '" + path + "'");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string number(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    return buf;
}

std::string new_session_id() {
    static std::mutex mu;
    static std::random_device rd;
    std::lock_guard lock(mu);
    char buf[33];
    for (int i = 0; i < 4; ++i) std::snprintf(buf + 8 * i, 9, "%08x", unsigned(rd()));
    return std::string(buf, 32);
}

// Constant-time comparison of equal-length secrets.
bool same_secret(const std::string& a, const std::string& b) {
    if (a.size() != b.size()) return false;
    unsigned char d = 0;
    for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
    return d == 0;
}

Status status_of(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const error& x) {
        switch (x.status()) {
            case TANDEM_ERR_INVALID_ARGUMENT: return {StatusCode::INVALID_ARGUMENT, x.what()};
            case TANDEM_ERR_CONTEXT_FULL: return {StatusCode::OUT_OF_RANGE, x.what()};
            // The device failed (a kernel that does not build, a lost device): retryable, the edge goes on alone.
            case TANDEM_ERR_BACKEND: return {StatusCode::UNAVAILABLE, std::string("the target's device failed: ") + x.what()};
            default: return {StatusCode::INTERNAL, x.what()};
        }
    } catch (const std::exception& x) {
        return {StatusCode::INTERNAL, x.what()};
    }
}

// A layer-split session's cloud half: its own KV cache, layers [K, n_layer) and the head.
struct split_state {
    split_state(const model& m, int64_t capacity, int32_t k, const sampling_params& sp)
        : cache(m, capacity), fwd(m, cache), smp(sp) {
        fwd.set_layers(k, 0);
    }
    kv_cache cache;
    forward_pass fwd;
    sampler smp;
    uint64_t pos = 0;
};

struct session_entry {
    session_entry(std::string id_, std::string owner_, const sampling_params& sp)
        : id(std::move(id_)), owner(std::move(owner_)), seq(sp) {}
    const std::string id, owner;
    verify_sequence seq;
    std::unique_ptr<split_state> split;  // layer-split sessions only
    std::mutex mu;  // one request at a time; closing waits for it
    bool closed = false;
    int64_t rows = 0;  // KV rows accounted to the owner's quota: committed tokens, or the split position
    std::chrono::steady_clock::time_point last_active = std::chrono::steady_clock::now();
};

// Latency samples for percentiles: the most recent 8192.
class latency_window {
   public:
    void add(double ms) {
        std::lock_guard lock(mu_);
        if (v_.size() < 8192) v_.push_back(ms);
        else v_[next_++ % v_.size()] = ms;
    }
    double percentile(double q) const {
        std::lock_guard lock(mu_);
        if (v_.empty()) return 0;
        std::vector<double> s = v_;
        const size_t k = std::min(s.size() - 1, size_t(q * double(s.size())));
        std::nth_element(s.begin(), s.begin() + int64_t(k), s.end());
        return s[k];
    }

   private:
    mutable std::mutex mu_;
    std::vector<double> v_;
    size_t next_ = 0;
};

}  // namespace

struct collab_server::impl final : v1::Collab::Service {
    impl(const model& target, const server_config& c)
        : m(target),
          cfg(c),
          capacity(c.seq_capacity > 0 ? c.seq_capacity : target.hparams().n_ctx_train),
          bv(target, capacity, regions_for(target, c), std::min<size_t>(c.lim.max_tree_nodes, size_t(capacity) - 1)),
          sched(bv, c.sched),
          emu(c.emu) {
        for (size_t i = 0; i < cfg.tokens.size(); ++i) known.push_back({"caller-" + std::to_string(i), cfg.tokens[i]});
        known.insert(known.end(), cfg.named_tokens.begin(), cfg.named_tokens.end());
        for (size_t i = 0; i < known.size(); ++i) {
            if (known[i].name.empty()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "a caller has an empty name");
            if (known[i].token.empty()) {
                throw error(TANDEM_ERR_INVALID_ARGUMENT, "caller '" + known[i].name + "' has an empty token");
            }
            for (size_t j = 0; j < i; ++j) {
                if (known[j].name == known[i].name)
                    throw error(TANDEM_ERR_INVALID_ARGUMENT, "caller name '" + known[i].name + "' is used twice");
                if (known[j].token == known[i].token) {
                    throw error(TANDEM_ERR_INVALID_ARGUMENT, "callers '" + known[j].name + "' and '" + known[i].name +
                                                                 "' have the same token: a token must name one caller");
                }
            }
            callers[known[i].name];
        }
        if (known.empty()) callers[""];  // the anonymous caller of a --no-auth server
        if (known.empty() && !cfg.allow_no_auth) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        "no bearer token configured: pass --token (or --token-file), or --no-auth for a trusted network");
        }
        if (cfg.tls_cert.empty() != cfg.tls_key.empty()) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "TLS needs both a certificate and a key file");
        }
        if (cfg.lim.max_prompt_tokens == 0 || cfg.lim.max_prompt_tokens >= capacity) {
            cfg.lim.max_prompt_tokens = uint32_t(capacity - 1);
        }
    }

    static int32_t regions_for(const model& t, const server_config& c) {
        if (c.kv_regions > 0) return c.kv_regions;
        const int64_t cap = c.seq_capacity > 0 ? c.seq_capacity : t.hparams().n_ctx_train;
        const int64_t per_slot = int64_t(t.hparams().n_layer) * 2 * t.hparams().kv_dim() * 4;
        const int64_t n = c.kv_memory_mb * (int64_t(1) << 20) / std::max<int64_t>(cap * per_slot, 1);
        return int32_t(std::clamp<int64_t>(n, 1, 1 << 16));
    }

    // ---- authentication and session lookup ----
    Status authenticate(grpc::ServerContext* ctx, std::string* caller) const {
        if (known.empty()) {
            *caller = "";
            return Status::OK;
        }
        const auto& md = ctx->client_metadata();
        const auto it = md.find("authorization");
        if (it == md.end()) return {StatusCode::UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata"};
        const std::string v(it->second.data(), it->second.size());
        if (v.rfind("Bearer ", 0) != 0) return {StatusCode::UNAUTHENTICATED, "authorization metadata must be 'Bearer <token>'"};
        const std::string tok = v.substr(7);
        for (const named_token& k : known) {
            if (same_secret(tok, k.token)) {
                *caller = k.name;
                return Status::OK;
            }
        }
        return {StatusCode::UNAUTHENTICATED, "invalid bearer token"};
    }

    Status find(const std::string& id, const std::string& caller, std::shared_ptr<session_entry>* out) {
        if (!valid_session_id(id)) return {StatusCode::INVALID_ARGUMENT, "malformed session id"};
        std::lock_guard lock(sessions_mu);
        const auto it = sessions.find(id);
        if (it == sessions.end()) return {StatusCode::NOT_FOUND, "no session " + id + " (closed, expired or lost in a restart): open a new one"};
        if (!same_secret(it->second->owner, caller) || it->second->owner.size() != caller.size()) {
            return {StatusCode::PERMISSION_DENIED, "session " + id + " belongs to another caller"};
        }
        *out = it->second;
        return Status::OK;
    }

    // ---- per-caller quotas (caller_limits); `callers` holds every configured caller from the start ----
    struct caller_state {
        int32_t sessions = 0;
        int64_t kv_rows = 0;
        double bucket = -1;  // request tokens left; -1 = full (not yet used)
        std::chrono::steady_clock::time_point refilled;
    };

    // Takes one request token from the caller's bucket.
    Status admit(const std::string& caller) {
        const caller_limits& q = cfg.per_caller;
        if (q.requests_per_second <= 0) return Status::OK;
        const double burst = q.burst > 0 ? q.burst : std::max(1.0, q.requests_per_second);
        const auto now = std::chrono::steady_clock::now();
        std::lock_guard lock(callers_mu);
        caller_state& c = callers[caller];
        const double elapsed_s = std::chrono::duration<double>(now - c.refilled).count();
        c.bucket = c.bucket < 0 ? burst : std::min(burst, c.bucket + q.requests_per_second * elapsed_s);
        c.refilled = now;
        if (c.bucket < 1) {
            return {StatusCode::RESOURCE_EXHAUSTED, "caller '" + caller + "' is over its request rate limit of " +
                                                        number(q.requests_per_second) + " requests/s (burst " +
                                                        number(burst) + "): retry later"};
        }
        c.bucket -= 1;
        return Status::OK;
    }

    Status take_session(const std::string& caller) {
        std::lock_guard lock(callers_mu);
        caller_state& c = callers[caller];
        if (cfg.per_caller.max_sessions > 0 && c.sessions >= cfg.per_caller.max_sessions) {
            return {StatusCode::RESOURCE_EXHAUSTED, "caller '" + caller + "' is at its limit of " +
                                                        std::to_string(cfg.per_caller.max_sessions) +
                                                        " open session(s): close one first"};
        }
        ++c.sessions;
        return Status::OK;
    }

    // Reserves n more KV rows for the caller, refused if that would take it over its limit.
    Status reserve_rows(const std::string& caller, int64_t n) {
        std::lock_guard lock(callers_mu);
        caller_state& c = callers[caller];
        if (cfg.per_caller.max_kv_rows > 0 && c.kv_rows + n > cfg.per_caller.max_kv_rows) {
            const std::string limit = std::to_string(cfg.per_caller.max_kv_rows);
            return {StatusCode::RESOURCE_EXHAUSTED, "caller '" + caller + "' is over its KV memory limit of " + limit +
                                                        " cache rows (holds " + std::to_string(c.kv_rows) +
                                                        ", this request needs up to " + std::to_string(n) +
                                                        " more): close a session first"};
        }
        c.kv_rows += n;
        return Status::OK;
    }

    void give_back(const std::string& caller, int32_t sessions_, int64_t rows) {
        std::lock_guard lock(callers_mu);
        caller_state& c = callers[caller];
        c.sessions -= sessions_;
        c.kv_rows -= rows;
    }

    // With s.mu held: replaces a reservation of `reserved` rows by what the session actually holds now.
    void settle_rows(session_entry& s, int64_t reserved) {
        const int64_t held = s.split ? int64_t(s.split->pos) : int64_t(s.seq.tokens.size());
        give_back(s.owner, 0, s.rows + reserved - held);
        s.rows = held;
    }
    struct row_settlement {
        impl& p;
        session_entry& s;
        int64_t reserved;
        ~row_settlement() { p.settle_rows(s, reserved); }
    };

    void drop(const std::shared_ptr<session_entry>& s) {
        {
            std::lock_guard lock(s->mu);
            if (s->closed) return;
            s->closed = true;
            sched.exclusive([&](batch_verifier& b) { b.release(s->seq); });
            give_back(s->owner, 1, s->rows);
        }
        std::lock_guard lock(sessions_mu);
        sessions.erase(s->id);
    }

    Status reject(Status st) {
        rejected.fetch_add(1);
        log().info("rejected: {} ({})", st.error_message(), int(st.error_code()));
        return st;
    }

    // ---- RPCs ----
    Status OpenSession(grpc::ServerContext* ctx, const v1::OpenSessionRequest* req, v1::OpenSessionResponse* resp) override {
        std::string caller;
        if (Status st = authenticate(ctx, &caller); !st.ok()) return reject(st);
        if (Status st = admit(caller); !st.ok()) return reject(st);
        const auto& tok = m.tokenizer();
        if (!cfg.model_id.empty() && !req->model_id().empty() && req->model_id() != cfg.model_id) {
            return reject({StatusCode::NOT_FOUND, "this server serves model '" + cfg.model_id + "', not '" + req->model_id() + "'"});
        }
        if (req->tokenizer_fingerprint() != tok.fingerprint() || int64_t(req->vocab_size()) != tok.n_vocab()) {
            char buf[320];
            std::snprintf(buf, sizeof buf,
                          "vocabulary mismatch: the edge's draft has %u tokens (fingerprint %016llx), the target '%s' has "
                          "%d tokens (fingerprint %016llx); speculative decoding needs identical vocabularies",
                          req->vocab_size(), static_cast<unsigned long long>(req->tokenizer_fingerprint()),
                          cfg.model_id.c_str(), tok.n_vocab(), static_cast<unsigned long long>(tok.fingerprint()));
            return reject({StatusCode::FAILED_PRECONDITION, buf});
        }
        // The caller's quota is taken before any work and given back if the session is not opened after all.
        if (Status st = take_session(caller); !st.ok()) return reject(st);
        const auto rows = int64_t(req->prompt_tokens_size());
        if (Status st = reserve_rows(caller, rows); !st.ok()) {
            give_back(caller, 1, 0);
            return reject(st);
        }
        bool opened = false;
        struct quota_refund {
            impl& p;
            const std::string& caller;
            int64_t rows;
            const bool& opened;
            ~quota_refund() {
                if (!opened) p.give_back(caller, 1, rows);
            }
        } refund{*this, caller, rows, opened};
        std::shared_ptr<session_entry> s;
        try {
            check_tokens(req->prompt_tokens(), tok.n_vocab(), cfg.lim.max_prompt_tokens, "prompt_tokens");
            s = std::make_shared<session_entry>(new_session_id(), caller, sampling_from_proto(req->sampling()));
            if (req->split_layer() > 0) {
                if (int64_t(req->split_layer()) >= m.hparams().n_layer) {
                    throw error(TANDEM_ERR_INVALID_ARGUMENT, "split_layer " + std::to_string(req->split_layer()) +
                                                                 " must be in [1, " + std::to_string(m.hparams().n_layer - 1) + "]");
                }
                if (!req->prompt_tokens().empty()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "a layer-split session takes no prompt tokens (send hidden states)");
                s->split = std::make_unique<split_state>(m, capacity, int32_t(req->split_layer()), s->seq.sp);
            } else {
                if (req->prompt_tokens().empty()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "prompt_tokens: at least one token (BOS) is needed");
                const std::vector<int32_t> prompt(req->prompt_tokens().begin(), req->prompt_tokens().end());
                sched.exclusive([&](batch_verifier& b) { b.start(s->seq, prompt); });
            }
        } catch (...) {
            return reject(status_of(std::current_exception()));
        }
        {
            std::lock_guard lock(sessions_mu);
            if (int64_t(sessions.size()) >= cfg.max_sessions) {
                return reject({StatusCode::RESOURCE_EXHAUSTED, "session limit of " + std::to_string(cfg.max_sessions) + " reached"});
            }
            s->rows = rows;
            sessions[s->id] = s;
            opened = true;
        }
        sessions_total.fetch_add(1);
        resp->set_session_id(s->id);
        resp->set_model_id(cfg.model_id);
        resp->set_context_length(uint32_t(capacity));
        resp->set_max_tree_nodes(uint32_t(bv.max_nodes()));
        resp->set_max_draft_top_k(cfg.lim.max_draft_top_k);
        resp->set_committed_position(s->split ? 0 : s->seq.tokens.size());
        resp->set_n_embd(uint32_t(m.hparams().n_embd));
        return Status::OK;
    }

    Status CloseSession(grpc::ServerContext* ctx, const v1::CloseSessionRequest* req, v1::CloseSessionResponse*) override {
        std::string caller;
        if (Status st = authenticate(ctx, &caller); !st.ok()) return reject(st);
        std::shared_ptr<session_entry> s;
        if (Status st = find(req->session_id(), caller, &s); !st.ok()) return reject(st);
        drop(s);
        return Status::OK;
    }

    Status GetStats(grpc::ServerContext* ctx, const v1::StatsRequest*, v1::StatsResponse* resp) override {
        std::string caller;
        if (Status st = authenticate(ctx, &caller); !st.ok()) return reject(st);
        if (Status st = admit(caller); !st.ok()) return reject(st);
        *resp = snapshot();
        return Status::OK;
    }

    // Distillation: evaluated between batched passes in the evaluator's own KV cache; its positions count against
    // the caller's KV quota while they are evaluated.
    Status TopK(grpc::ServerContext* ctx, const v1::TopKRequest* req, v1::TopKResponse* resp) override {
        std::string caller;
        if (Status st = authenticate(ctx, &caller); !st.ok()) return reject(st);
        if (Status st = admit(caller); !st.ok()) return reject(st);
        const topk_limits lim{uint32_t(std::max(cfg.topk_max_sequences, 0)), uint32_t(std::max(cfg.topk_max_tokens, 0)),
                              std::min(cfg.lim.max_prompt_tokens, uint32_t(capacity)),
                              uint32_t(std::min(top_k_max, m.hparams().n_vocab)), uint32_t(cfg.max_message_bytes)};
        if (Status st = check_topk_request(*req, m, cfg.model_id, lim); !st.ok()) return reject(st);
        describe_topk(lim, m, resp);
        int64_t n = 0;
        for (const auto& s : req->sequences()) n += s.tokens_size();
        if (n == 0) return Status::OK;
        if (Status st = reserve_rows(caller, n); !st.ok()) return reject(st);
        struct refund {
            impl& p;
            const std::string& caller;
            int64_t n;
            ~refund() { p.give_back(caller, 0, n); }
        } give_back_rows{*this, caller, n};
        try {
            sched.exclusive([&](batch_verifier&) {
                // The call may have waited for the model past its deadline: then nobody wants the answer.
                if (ctx->IsCancelled()) return;
                std::lock_guard lock(topk_mu);
                if (!topk) topk = std::make_unique<topk_evaluator>(m);
                topk->run(*req, resp);
            });
        } catch (...) {
            return reject(status_of(std::current_exception()));
        }
        if (ctx->IsCancelled()) return {StatusCode::CANCELLED, "the TopK call was cancelled or passed its deadline"};
        topk_requests.fetch_add(1);
        topk_tokens.fetch_add(uint64_t(n));
        emu.pass(resp->ByteSizeLong());
        return Status::OK;
    }

    Status Verify(grpc::ServerContext* ctx, grpc::ServerReaderWriter<v1::VerifyResponse, v1::VerifyRequest>* stream) override {
        std::string caller;
        if (Status st = authenticate(ctx, &caller); !st.ok()) return reject(st);
        sched.stream_opened();
        struct closer {
            scheduler& s;
            ~closer() { s.stream_closed(); }
        } close_stream{sched};
        std::shared_ptr<session_entry> s;
        uint64_t last_request = 0;
        v1::VerifyRequest req;
        while (stream->Read(&req)) {
            const auto t0 = std::chrono::steady_clock::now();
            if (Status st = admit(caller); !st.ok()) return reject(st);
            if (!s) {
                if (Status st = find(req.session_id(), caller, &s); !st.ok()) return reject(st);
            } else if (!req.session_id().empty() && req.session_id() != s->id) {
                return reject({StatusCode::INVALID_ARGUMENT, "a verify stream serves one session"});
            }
            if (req.request_id() <= last_request) {
                return reject({StatusCode::INVALID_ARGUMENT, "request ids must increase within a stream (got " +
                                                                 std::to_string(req.request_id()) + " after " +
                                                                 std::to_string(last_request) + ")"});
            }
            last_request = req.request_id();
            v1::VerifyResponse resp;
            if (Status st = verify_one(*s, req, &resp); !st.ok()) return reject(st);
            latency.add(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            emu.pass(resp.ByteSizeLong());
            if (!stream->Write(resp)) break;
        }
        return Status::OK;
    }

    Status Forward(grpc::ServerContext* ctx, grpc::ServerReaderWriter<v1::ForwardResponse, v1::ForwardRequest>* stream) override {
        std::string caller;
        if (Status st = authenticate(ctx, &caller); !st.ok()) return reject(st);
        std::shared_ptr<session_entry> s;
        uint64_t last_request = 0;
        v1::ForwardRequest req;
        while (stream->Read(&req)) {
            const auto t0 = std::chrono::steady_clock::now();
            if (Status st = admit(caller); !st.ok()) return reject(st);
            if (!s) {
                if (Status st = find(req.session_id(), caller, &s); !st.ok()) return reject(st);
            } else if (!req.session_id().empty() && req.session_id() != s->id) {
                return reject({StatusCode::INVALID_ARGUMENT, "a forward stream serves one session"});
            }
            if (req.request_id() <= last_request) {
                return reject({StatusCode::INVALID_ARGUMENT, "request ids must increase within a stream"});
            }
            last_request = req.request_id();
            v1::ForwardResponse resp;
            if (Status st = forward_one(*s, req, &resp); !st.ok()) return reject(st);
            latency.add(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            emu.pass(resp.ByteSizeLong());
            if (!stream->Write(resp)) break;
        }
        return Status::OK;
    }

    Status forward_one(session_entry& s, const v1::ForwardRequest& req, v1::ForwardResponse* resp) {
        std::lock_guard lock(s.mu);
        if (s.closed) return {StatusCode::NOT_FOUND, "session " + s.id + " is closed"};
        if (!s.split) return {StatusCode::FAILED_PRECONDITION, "session " + s.id + " is a token-level session: use Verify"};
        s.last_active = std::chrono::steady_clock::now();
        split_state& sp = *s.split;
        if (req.base_position() != sp.pos) {
            return {StatusCode::OUT_OF_RANGE, "base_position " + std::to_string(req.base_position()) +
                                                  " is not the cloud's position " + std::to_string(sp.pos)};
        }
        if (req.n_tokens() > cfg.lim.max_prompt_tokens || sp.pos + req.n_tokens() >= uint64_t(capacity)) {
            return {StatusCode::OUT_OF_RANGE, std::to_string(req.n_tokens()) + " rows at position " + std::to_string(sp.pos) +
                                                  " exceed the limits (prompt " + std::to_string(cfg.lim.max_prompt_tokens) +
                                                  ", context " + std::to_string(capacity) + ")"};
        }
        if (req.top_k() > cfg.lim.max_draft_top_k) {
            return {StatusCode::INVALID_ARGUMENT, "top_k " + std::to_string(req.top_k()) + " exceeds the limit of " + std::to_string(cfg.lim.max_draft_top_k)};
        }
        if (Status st = reserve_rows(s.owner, int64_t(req.n_tokens())); !st.ok()) return st;
        const row_settlement settle{*this, s, int64_t(req.n_tokens())};
        std::vector<float> hidden, logits;
        try {
            hidden = decode_hidden(req, m.hparams().n_embd);
            const std::vector<int32_t> zeros(req.n_tokens(), 0);  // tokens are not used: hidden states come in
            const auto rows = causal_rows(zeros, int32_t(sp.pos), 0, false);
            hidden_io io;
            io.in = hidden;
            sched.exclusive([&](batch_verifier&) { sp.fwd.run(rows, logits, {}, &io); });
        } catch (...) {
            return status_of(std::current_exception());
        }
        sp.pos += req.n_tokens();
        split_forwards.fetch_add(1);
        split_tokens.fetch_add(req.n_tokens());
        resp->set_request_id(req.request_id());
        resp->set_next_token(sp.smp.sample(logits, {}));
        if (req.top_k() > 0) {
            std::vector<int32_t> idx(logits.size());
            for (size_t i = 0; i < idx.size(); ++i) idx[i] = int32_t(i);
            const size_t k = std::min<size_t>(req.top_k(), idx.size());
            std::partial_sort(idx.begin(), idx.begin() + int64_t(k), idx.end(),
                              [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b); });
            for (size_t i = 0; i < k; ++i) resp->add_top_tokens(idx[i]), resp->add_top_logits(logits[size_t(idx[i])]);
        }
        resp->set_committed_position(sp.pos);
        return Status::OK;
    }

    Status verify_one(session_entry& s, const v1::VerifyRequest& req, v1::VerifyResponse* resp) {
        std::lock_guard lock(s.mu);
        if (s.closed) return {StatusCode::NOT_FOUND, "session " + s.id + " is closed"};
        if (s.split) return {StatusCode::FAILED_PRECONDITION, "session " + s.id + " is a layer-split session: use Forward"};
        s.last_active = std::chrono::steady_clock::now();
        const int32_t V = m.tokenizer().n_vocab();
        const bool sampling = s.seq.sp.temperature > 0.f;
        draft_tree tree;
        try {
            check_tokens(req.committed_tokens(), V, cfg.lim.max_committed_tokens, "committed_tokens");
            tree = tree_from_proto(req, V, cfg.lim, sampling);
        } catch (...) {
            return status_of(std::current_exception());
        }
        const uint64_t P = s.seq.tokens.size();
        const uint64_t base = req.base_position(), end = base + uint64_t(req.committed_tokens_size());
        if (base > P) {
            return {StatusCode::OUT_OF_RANGE, "base_position " + std::to_string(base) + " is ahead of the cloud's committed position " + std::to_string(P) + ": resend from there"};
        }
        for (uint64_t i = base; i < std::min(end, P); ++i) {
            if (req.committed_tokens(int(i - base)) != s.seq.tokens[i]) {
                return {StatusCode::INVALID_ARGUMENT, "committed token at position " + std::to_string(i) + " differs from the cloud's"};
            }
        }
        resp->set_request_id(req.request_id());
        if (end < P) {  // a reply was lost: answer from what is committed, verify nothing
            for (uint64_t i = end; i < P; ++i) resp->add_accepted_tokens(s.seq.tokens[i]);
            resp->set_committed_position(P);
            resp->set_resync(true);
            return Status::OK;
        }
        // At most the new committed tokens, the accepted path and the next token become rows of this session.
        const int64_t growth = int64_t(end - P) + int64_t(tree.tokens.size()) + 1;
        if (Status st = reserve_rows(s.owner, growth); !st.ok()) return st;
        const row_settlement settle{*this, s, growth};
        if (end > P) {
            const std::vector<int32_t> extra(req.committed_tokens().begin() + int64_t(P - base), req.committed_tokens().end());
            try {
                sched.exclusive([&](batch_verifier& b) { b.append(s.seq, extra); });
            } catch (...) {
                return status_of(std::current_exception());
            }
        }
        verify_job job;
        job.seq = &s.seq;
        job.tree = &tree;
        const uint32_t batch = sched.verify(job);
        if (job.error) return status_of(job.error);
        for (int32_t u : job.result.path) resp->add_accepted_nodes(u), resp->add_accepted_tokens(tree.tokens[size_t(u)]);
        resp->add_accepted_tokens(job.result.next_token);
        resp->set_committed_position(s.seq.tokens.size());
        resp->set_batch_size(batch);
        return Status::OK;
    }

    v1::StatsResponse snapshot() const {
        v1::StatsResponse r;
        const scheduler_stats st = sched.stats();
        {
            std::lock_guard lock(sessions_mu);
            r.set_sessions_open(sessions.size());
        }
        r.set_sessions_total(sessions_total.load());
        r.set_passes(st.passes);
        r.set_multi_session_passes(st.multi_session_passes);
        r.set_max_batch_sessions(st.max_batch_sessions);
        r.set_mean_batch_sessions(st.passes ? double(st.batch_sessions_sum) / double(st.passes) : 0.0);
        r.set_tokens_verified(st.tokens_verified);
        r.set_tokens_accepted(st.tokens_accepted);
        r.set_tokens_committed(st.tokens_committed);
        r.set_evictions(st.evictions);
        r.set_verify_p50_ms(latency.percentile(0.50));
        r.set_verify_p95_ms(latency.percentile(0.95));
        r.set_verify_p99_ms(latency.percentile(0.99));
        r.set_requests_rejected(rejected.load());
        r.set_split_forwards(split_forwards.load());
        r.set_split_tokens(split_tokens.load());
        r.set_rows(st.rows);
        r.set_pass_seconds(st.pass_seconds);
        r.set_topk_requests(topk_requests.load());
        r.set_topk_tokens(topk_tokens.load());
        return r;
    }

    // Periodic work: counters to the log, idle sessions expired.
    void housekeeping() {
        std::unique_lock lock(hk_mu);
        uint64_t last_passes = 0;
        auto last_log = std::chrono::steady_clock::now();
        while (!hk_stop) {
            hk_cv.wait_for(lock, std::chrono::seconds(1));
            if (hk_stop) break;
            const auto now = std::chrono::steady_clock::now();
            std::vector<std::shared_ptr<session_entry>> idle;
            {
                std::lock_guard slock(sessions_mu);
                for (auto& [id, s] : sessions)
                    if (now - s->last_active > cfg.idle_timeout) idle.push_back(s);
            }
            for (auto& s : idle) {
                log().info("session {} expired after {} s idle", s->id, cfg.idle_timeout.count());
                drop(s);
            }
            if (cfg.stats_interval.count() > 0 && now - last_log >= cfg.stats_interval) {
                last_log = now;
                const auto r = snapshot();
                if (r.passes() != last_passes) {
                    last_passes = r.passes();
                    log().info("stats: {} sessions open, {} passes ({} batched, mean {:.2f} sessions), {} verified, {} "
                               "accepted, {} committed, verify p50/p95/p99 {:.2f}/{:.2f}/{:.2f} ms, {} evictions, {} rejected",
                               r.sessions_open(), r.passes(), r.multi_session_passes(), r.mean_batch_sessions(),
                               r.tokens_verified(), r.tokens_accepted(), r.tokens_committed(), r.verify_p50_ms(),
                               r.verify_p95_ms(), r.verify_p99_ms(), r.evictions(), r.requests_rejected());
                }
            }
        }
    }

    const model& m;
    server_config cfg;
    int64_t capacity;
    batch_verifier bv;
    scheduler sched;
    net_emu emu;
    mutable std::mutex sessions_mu;
    std::map<std::string, std::shared_ptr<session_entry>> sessions;
    std::vector<named_token> known;  // every accepted token and its caller's name
    std::mutex callers_mu;
    std::map<std::string, caller_state> callers;
    std::atomic<uint64_t> sessions_total{0}, rejected{0}, split_forwards{0}, split_tokens{0};
    std::mutex topk_mu;  // the evaluator is made on first use (most servers never distil)
    std::unique_ptr<topk_evaluator> topk;
    std::atomic<uint64_t> topk_requests{0}, topk_tokens{0};
    latency_window latency;
    std::unique_ptr<grpc::Server> server;
    int bound_port = 0;
    std::mutex hk_mu;
    std::condition_variable hk_cv;
    bool hk_stop = false;
    std::thread hk;
    std::mutex stop_mu;
    std::condition_variable stop_cv;
    bool stopped = false;
};

collab_server::collab_server(const model& target, const server_config& cfg) : p_(std::make_unique<impl>(target, cfg)) {}

collab_server::~collab_server() { shutdown(std::chrono::milliseconds(2000)); }

void collab_server::start() {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder b;
    std::shared_ptr<grpc::ServerCredentials> creds;
    if (!p_->cfg.tls_cert.empty()) {
        grpc::SslServerCredentialsOptions o;
        o.pem_key_cert_pairs.push_back({read_file(p_->cfg.tls_key, "key"), read_file(p_->cfg.tls_cert, "certificate")});
        creds = grpc::SslServerCredentials(o);
    } else {
        creds = grpc::InsecureServerCredentials();
    }
    b.AddListeningPort(p_->cfg.address, creds, &p_->bound_port);
    b.RegisterService(p_.get());
    b.SetMaxReceiveMessageSize(p_->cfg.max_message_bytes);
    b.SetMaxSendMessageSize(p_->cfg.max_message_bytes);
    p_->server = b.BuildAndStart();
    if (!p_->server || p_->bound_port == 0) {
        p_->server.reset();
        throw error(TANDEM_ERR_IO, "cannot listen on " + p_->cfg.address + " (address in use or invalid?)");
    }
    p_->server->GetHealthCheckService()->SetServingStatus("tandem.v1.Collab", true);
    p_->hk = std::thread([this] { p_->housekeeping(); });
    log().info("serving model '{}' on {} ({}, {}), {} KV regions of {} tokens, trees up to {} nodes, batch wait {} us, "
               "token budget {}",
               p_->cfg.model_id, p_->cfg.address.substr(0, p_->cfg.address.rfind(':') + 1) + std::to_string(p_->bound_port),
               p_->cfg.tls_cert.empty() ? "plaintext" : "TLS", p_->known.empty() ? "no auth" : "bearer token",
               p_->bv.n_regions(), p_->capacity, p_->bv.max_nodes(), p_->cfg.sched.max_wait.count(),
               p_->cfg.sched.token_budget);
}

int collab_server::port() const { return p_->bound_port; }

void collab_server::wait() {
    std::unique_lock lock(p_->stop_mu);
    p_->stop_cv.wait(lock, [&] { return p_->stopped; });
}

void collab_server::shutdown(std::chrono::milliseconds grace) {
    {
        std::lock_guard lock(p_->stop_mu);
        if (p_->stopped) return;
        p_->stopped = true;
    }
    if (p_->server) {
        p_->server->GetHealthCheckService()->SetServingStatus(false);
        p_->server->Shutdown(std::chrono::system_clock::now() + grace);
    }
    {
        std::lock_guard lock(p_->hk_mu);
        p_->hk_stop = true;
    }
    p_->hk_cv.notify_all();
    if (p_->hk.joinable()) p_->hk.join();
    p_->stop_cv.notify_all();
    if (p_->server) log().info("server stopped");
}

v1::StatsResponse collab_server::stats() const { return p_->snapshot(); }

grpc::Status collab_server::open_local(const v1::OpenSessionRequest& req, v1::OpenSessionResponse* resp) {
    grpc::ServerContext ctx;
    return p_->OpenSession(&ctx, &req, resp);
}

grpc::Status collab_server::verify_local(const v1::VerifyRequest& req, v1::VerifyResponse* resp) {
    std::string caller;
    grpc::ServerContext ctx;
    if (grpc::Status st = p_->authenticate(&ctx, &caller); !st.ok()) return st;
    std::shared_ptr<session_entry> s;
    if (grpc::Status st = p_->find(req.session_id(), caller, &s); !st.ok()) return st;
    return p_->verify_one(*s, req, resp);
}

grpc::Status collab_server::forward_local(const v1::ForwardRequest& req, v1::ForwardResponse* resp) {
    std::string caller;
    grpc::ServerContext ctx;
    if (grpc::Status st = p_->authenticate(&ctx, &caller); !st.ok()) return st;
    std::shared_ptr<session_entry> s;
    if (grpc::Status st = p_->find(req.session_id(), caller, &s); !st.ok()) return st;
    return p_->forward_one(*s, req, resp);
}

grpc::Status collab_server::close_local(const std::string& session_id) {
    grpc::ServerContext ctx;
    v1::CloseSessionRequest req;
    req.set_session_id(session_id);
    v1::CloseSessionResponse resp;
    return p_->CloseSession(&ctx, &req, &resp);
}

void collab_server::exclusive(const std::function<void()>& f) {
    p_->sched.exclusive([&](batch_verifier&) { f(); });
}

int32_t collab_server::kv_regions() const { return p_->bv.n_regions(); }

}  // namespace tandem::collab
