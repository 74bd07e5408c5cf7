// A generation session: one sequence in its own KV cache, fed in batches, stepped one token at a time
// with its own sampler, with timings. The C API's tandem_session wraps this class.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <vector>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampling.h"

namespace tandem {

struct session_timings {
    uint64_t prompt_tokens = 0;
    double prompt_seconds = 0;
    uint64_t gen_tokens = 0;
    double gen_seconds = 0;
};

class session {
   public:
    // n_ctx: KV capacity in tokens (<= 0: the model's training context); n_batch: rows per forward pass.
    session(const model& m, const sampling_params& sp, int64_t n_ctx = 0, int64_t n_batch = 512);

    // Feeds tokens in batches of n_batch. When all_logits is given it receives n x n_vocab floats.
    // Throws tandem::error(TANDEM_ERR_CONTEXT_FULL) if the cache cannot hold them (nothing is fed then).
    void feed(std::span<const int32_t> tokens, std::vector<float>* all_logits = nullptr);
    // Samples the next token from the last fed position, feeds it and returns it.
    int32_t step();
    // Drops every token after the first n (rollback); the cache contents beyond are simply ignored.
    void truncate(size_t n);
    void reset();

    size_t length() const { return tokens_.size(); }
    int64_t capacity() const { return cache_.n_slots(); }
    const std::vector<int32_t>& tokens() const { return tokens_; }
    std::span<const float> last_logits() const { return last_logits_; }
    const session_timings& timings() const { return timings_; }
    tandem::sampler& sampler() { return sampler_; }
    const model& get_model() const { return m_; }

   private:
    double run(std::span<const int32_t> tokens, std::vector<float>* all_logits);

    const model& m_;
    kv_cache cache_;
    forward_pass fwd_;
    tandem::sampler sampler_;
    int64_t n_batch_;
    std::vector<int32_t> tokens_;
    std::vector<float> last_logits_, scratch_logits_;
    session_timings timings_;
};

}  // namespace tandem
