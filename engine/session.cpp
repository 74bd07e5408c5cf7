// Generation sessions: batching a prompt through the forward pass and the sample-feed loop.
#include "engine/session.h"

#include "engine/error.h"

namespace tandem {

namespace {
int64_t resolve_ctx(const model& m, int64_t n_ctx) { return n_ctx > 0 ? n_ctx : m.hparams().n_ctx_train; }
}  // namespace

session::session(const model& m, const sampling_params& sp, int64_t n_ctx, int64_t n_batch)
    : m_(m), cache_(m, resolve_ctx(m, n_ctx)), fwd_(m, cache_), sampler_(sp), n_batch_(std::max<int64_t>(1, n_batch)) {}

double session::run(std::span<const int32_t> tokens, std::vector<float>* all_logits) {
    if (tokens.empty()) return 0;
    if (int64_t(tokens_.size() + tokens.size()) > cache_.n_slots()) {
        throw error(TANDEM_ERR_CONTEXT_FULL, "context full: " + std::to_string(tokens_.size()) + " + " +
                                                 std::to_string(tokens.size()) + " tokens exceed the KV cache of " +
                                                 std::to_string(cache_.n_slots()));
    }
    const auto t0 = std::chrono::steady_clock::now();
    const size_t n_vocab = size_t(m_.hparams().n_vocab);
    if (all_logits) all_logits->resize(tokens.size() * n_vocab);
    const size_t start = tokens_.size();
    for (size_t done = 0; done < tokens.size();) {
        const size_t n = std::min(tokens.size() - done, size_t(n_batch_));
        const auto rows = causal_rows(tokens.subspan(done, n), int32_t(start + done), 0, all_logits != nullptr);
        fwd_.run(rows, scratch_logits_);
        if (all_logits) std::copy(scratch_logits_.begin(), scratch_logits_.end(), all_logits->begin() + done * n_vocab);
        done += n;
        tokens_.insert(tokens_.end(), tokens.begin() + (done - n), tokens.begin() + done);
    }
    last_logits_.assign(scratch_logits_.end() - n_vocab, scratch_logits_.end());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void session::feed(std::span<const int32_t> tokens, std::vector<float>* all_logits) {
    const double s = run(tokens, all_logits);
    timings_.prompt_tokens += tokens.size();
    timings_.prompt_seconds += s;
}

int32_t session::step() {
    if (last_logits_.empty()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "step: feed at least one token first");
    const auto t0 = std::chrono::steady_clock::now();
    const int32_t tok = sampler_.sample(last_logits_, tokens_);
    const int32_t one[1] = {tok};
    run(one, nullptr);
    timings_.gen_tokens += 1;
    timings_.gen_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return tok;
}

void session::truncate(size_t n) {
    if (n < tokens_.size()) {
        tokens_.resize(n);
        last_logits_.clear();  // the logits of position n-1 are gone; the next feed recomputes them
    }
}

void session::reset() {
    tokens_.clear();
    last_logits_.clear();
    sampler_.reset();
}

}  // namespace tandem
