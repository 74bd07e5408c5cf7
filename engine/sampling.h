// Token sampling: repetition penalty, then greedy (temperature 0) or temperature + top-k + top-p + min-p
// followed by a draw from a seeded generator. The truncated distribution is exposed as well, because
// speculative decoding needs the exact distribution a draft token was drawn from.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tandem {

struct sampling_params {
    float temperature = 0.8f;  // 0 = greedy
    int32_t top_k = 40;        // 0 = off
    float top_p = 0.95f;       // 1 = off
    float min_p = 0.05f;       // 0 = off
    float repeat_penalty = 1.0f;  // 1 = off; > 1 discourages tokens seen in the last repeat_last_n
    int32_t repeat_last_n = 64;
    uint64_t seed = 0;
};

// Deterministic, platform-independent generator (xoshiro256** seeded through splitmix64).
class rng {
   public:
    explicit rng(uint64_t seed);
    uint64_t next();
    float uniform();  // [0, 1) with 24 random bits

   private:
    uint64_t s_[4];
};

struct token_prob {
    int32_t token;
    float p;
};

class sampler {
   public:
    explicit sampler(const sampling_params& p);
    const sampling_params& params() const { return p_; }
    void reset();  // re-seed

    // The distribution the next token is drawn from, sorted by probability (descending), summing to 1.
    // Greedy gives the single argmax token with p = 1. `history` feeds the repetition penalty.
    std::vector<token_prob> distribution(std::span<const float> logits, std::span<const int32_t> history) const;
    // Draws from distribution(logits, history).
    int32_t sample(std::span<const float> logits, std::span<const int32_t> history);
    // Draws from a given distribution.
    int32_t draw(std::span<const token_prob> dist);

   private:
    sampling_params p_;
    tandem::rng rng_;
};

// Index of the largest logit (the first on ties).
int32_t argmax(std::span<const float> logits);

}  // namespace tandem
