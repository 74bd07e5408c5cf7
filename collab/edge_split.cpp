// The edge's layer-split mode: embedding + layers [0, K) of the target here, the rest in the cloud.
#include <chrono>

#include "collab/edge.h"
#include "collab/log.h"
#include "collab/messages.h"
#include "engine/error.h"

namespace tandem::collab {

edge_result edge_session::generate_split(const std::vector<int32_t>& prompt, int32_t n,
                                         const std::function<void(const edge_event&)>& on_event,
                                         const std::function<bool()>& cancelled) {
    const auto t_start = std::chrono::steady_clock::now();
    const auto& hp = draft_.hparams();
    const int64_t cap = cfg_.ctx > 0 ? cfg_.ctx : hp.n_ctx_train;
    kv_cache cache(draft_, cap);
    forward_pass fwd(draft_, cache);
    fwd.set_layers(0, cfg_.split_layer);

    v1::OpenSessionRequest open;
    open.set_model_id(cfg_.model_id);
    open.set_tokenizer_fingerprint(draft_.tokenizer().fingerprint());
    open.set_vocab_size(uint32_t(draft_.tokenizer().n_vocab()));
    open.set_split_layer(uint32_t(cfg_.split_layer));
    sampling_to_proto(cfg_.sampling, open.mutable_sampling());
    const link_counters c0 = link_->counters();
    v1::OpenSessionResponse opened;
    try {
        opened = link_->open(open);
    } catch (const link_error& e) {
        if (e.code() == grpc::StatusCode::FAILED_PRECONDITION) {
            throw link_error(e.code(), "the server refused model '" + cfg_.draft_name + "': " + e.what());
        }
        throw;
    }
    if (int64_t(opened.n_embd()) != hp.n_embd) {
        throw link_error(grpc::StatusCode::FAILED_PRECONDITION, "the server's target has width " + std::to_string(opened.n_embd()) +
                                                                    ", the edge's model " + std::to_string(hp.n_embd) +
                                                                    ": layer split needs the same model on both sides");
    }
    const int32_t eos = draft_.tokenizer().eos(), bos = draft_.tokenizer().bos();
    edge_result r;
    std::vector<int32_t> pending = prompt;
    int64_t pos = 0;
    uint64_t request_id = 0;
    double draft_seconds = 0;
    while (int32_t(r.tokens.size()) < n && !(cancelled && cancelled())) {
        if (pos + int64_t(pending.size()) >= std::min<int64_t>(cap, opened.context_length())) break;
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<float> logits, hidden;
        hidden_io io;
        io.out = &hidden;
        auto rows = causal_rows(pending, int32_t(pos), 0, false);
        rows.back().logits = false;  // the edge has no head to run: the cloud decides
        fwd.run(rows, logits, {}, &io);
        v1::ForwardRequest req;
        req.set_session_id(opened.session_id());
        req.set_request_id(++request_id);
        req.set_base_position(uint64_t(pos));
        encode_hidden(hidden, hp.n_embd, cfg_.split_int8 ? v1::HIDDEN_INT8 : v1::HIDDEN_F16, &req);
        draft_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const v1::ForwardResponse resp = link_->forward(req);
        pos += int64_t(pending.size());
        const int32_t tok = resp.next_token();
        if (tok < 0 || tok >= hp.n_vocab) throw link_error(grpc::StatusCode::INTERNAL, "the server sent token " + std::to_string(tok));
        r.tokens.push_back(tok);
        r.verified.push_back(true);
        if (on_event) on_event({0, 0, {tok}, true});
        if (!cfg_.ignore_eos && (tok == eos || tok == bos)) break;
        pending = {tok};
    }
    link_->close(opened.session_id());
    const auto& c = link_->counters();
    r.stats.round_trips = c.round_trips - c0.round_trips;
    r.stats.verified_tokens = r.tokens.size();
    r.stats.bytes_sent = c.bytes_sent - c0.bytes_sent;
    r.stats.bytes_received = c.bytes_received - c0.bytes_received;
    r.stats.wait_seconds = c.wait_seconds - c0.wait_seconds;
    r.stats.draft_seconds = draft_seconds;
    r.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    return r;
}

}  // namespace tandem::collab
