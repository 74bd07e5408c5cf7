// TopK evaluation for distillation; see topk_eval.h. The selection and softmax are engine/distill.h's
// top_k_distribution, the same code the local teacher uses, so a remote teacher gives the same targets.
#include "collab/topk_eval.h"

#include <algorithm>
#include <cstdio>

#include "engine/distill.h"
#include "engine/error.h"

namespace tandem::collab {

using grpc::Status;
using grpc::StatusCode;

Status check_topk_request(const v1::TopKRequest& req, const model& target, const std::string& model_id,
                          const topk_limits& lim) {
    const auto& tok = target.tokenizer();
    if (req.tokenizer_fingerprint() != tok.fingerprint() || int64_t(req.vocab_size()) != tok.n_vocab()) {
        char buf[320];
        std::snprintf(buf, sizeof buf,
                      "vocabulary mismatch: the student has %u tokens (fingerprint %016llx), the teacher '%s' has %d "
                      "tokens (fingerprint %016llx); distillation needs identical vocabularies",
                      req.vocab_size(), static_cast<unsigned long long>(req.tokenizer_fingerprint()), model_id.c_str(),
                      tok.n_vocab(), static_cast<unsigned long long>(tok.fingerprint()));
        return {StatusCode::FAILED_PRECONDITION, buf};
    }
    auto bad = [](const std::string& msg) { return Status(StatusCode::INVALID_ARGUMENT, msg); };
    const int n_seq = req.sequences_size();
    if (n_seq == 0) return Status::OK;  // a probe
    if (req.top_k() < 1 || req.top_k() > lim.max_top_k)
        return bad("top_k " + std::to_string(req.top_k()) + " is not in [1, " + std::to_string(lim.max_top_k) + "]");
    if (uint32_t(n_seq) > lim.max_sequences)
        return bad(std::to_string(n_seq) + " sequences exceed the limit of " + std::to_string(lim.max_sequences) +
                   " per request");
    uint64_t total = 0;
    for (int s = 0; s < n_seq; ++s) {
        const auto& t = req.sequences(s).tokens();
        if (t.empty()) return bad("sequence " + std::to_string(s) + " is empty");
        if (uint32_t(t.size()) > lim.max_sequence_tokens)
            return bad("sequence " + std::to_string(s) + " has " + std::to_string(t.size()) +
                       " tokens, over the limit of " + std::to_string(lim.max_sequence_tokens));
        for (int32_t id : t)
            if (id < 0 || id >= tok.n_vocab())
                return bad("sequence " + std::to_string(s) + ": token " + std::to_string(id) + " is not in [0, " +
                           std::to_string(tok.n_vocab()) + ")");
        total += uint64_t(t.size());
    }
    if (total > lim.max_tokens)
        return bad(std::to_string(total) + " tokens exceed the limit of " + std::to_string(lim.max_tokens) +
                   " per request");
    if (topk_reply_bytes(total, req.top_k()) > lim.max_message_bytes)
        return bad("the reply for " + std::to_string(total) + " positions of top_k " + std::to_string(req.top_k()) +
                   " would exceed the message limit of " + std::to_string(lim.max_message_bytes) + " bytes");
    return Status::OK;
}

void describe_topk(const topk_limits& lim, const model& target, v1::TopKResponse* resp) {
    resp->set_max_sequences(lim.max_sequences);
    resp->set_max_tokens(lim.max_tokens);
    resp->set_max_sequence_tokens(lim.max_sequence_tokens);
    resp->set_max_top_k(lim.max_top_k);
    resp->set_max_message_bytes(lim.max_message_bytes);
    resp->set_vocab_size(uint32_t(target.tokenizer().n_vocab()));
    resp->set_tokenizer_fingerprint(target.tokenizer().fingerprint());
}

topk_evaluator::topk_evaluator(const model& target) : m_(target) {}

void topk_evaluator::run(const v1::TopKRequest& req, v1::TopKResponse* resp) {
    const int32_t V = m_.hparams().n_vocab;
    const auto k = int32_t(req.top_k());
    resp->set_top_k(uint32_t(k));
    int64_t longest = 0;
    for (const auto& s : req.sequences()) longest = std::max<int64_t>(longest, s.tokens_size());
    const int64_t budget = std::max(pass_tokens, longest);
    if (!cache_ || cache_->n_slots() < budget) {
        fwd_.reset();
        cache_ = std::make_unique<kv_cache>(m_, budget);
        fwd_ = std::make_unique<forward_pass>(m_, *cache_);
    }
    std::vector<batch_row> rows;
    std::vector<int32_t> ids;
    std::vector<float> p;
    auto flush = [&] {
        if (rows.empty()) return;
        fwd_->run(rows, logits_);
        top_k_distribution(logits_, V, k, ids, p);
        resp->mutable_ids()->Add(ids.begin(), ids.end());
        resp->mutable_probs()->Add(p.begin(), p.end());
        rows.clear();
    };
    for (const auto& s : req.sequences()) {
        if (int64_t(rows.size()) + s.tokens_size() > budget) flush();
        // Each sequence owns the slots after the previous one's, at positions from 0: a ragged batch.
        const std::span<const int32_t> seq(s.tokens().data(), size_t(s.tokens_size()));
        const auto r = causal_rows(seq, 0, int32_t(rows.size()), true);
        rows.insert(rows.end(), r.begin(), r.end());
    }
    flush();
}

}  // namespace tandem::collab
