// Distillation targets: a teacher gives, for every row of a training batch, its top-k next-token distribution
// (softmax over its top-k logits, renormalised), which becomes the student's cross-entropy target. The teacher is
// an interface so that a network teacher (top-k fetched from `tandem serve`) can replace the local one.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampling.h"
#include "engine/train_graph.h"

namespace tandem {

// How a teacher continues prompts. Each next token comes from the teacher's top-k next-token distribution
// (top_k_distribution): greedy takes its first entry (the largest logit, ties to the lower id); temperature T > 0
// draws from p_j^(1/T) renormalised, which is the softmax of the top-k logits divided by T. Prompt i draws from
// its own generator, seeded from (seed, i), so the text does not depend on how prompts are batched.
struct teacher_generation {
    int32_t n_new = 0;
    float temperature = 0.f;  // 0: greedy
    int32_t top_k = 40;       // candidates per draw (clamped to [1, min(n_vocab, top_k_max)])
    uint64_t seed = 0;
    int32_t bos = 1, eos = 2;  // the shared vocabulary's (the student's tokenizer knows them)
};

class teacher {
 public:
    virtual ~teacher() = default;
    virtual int32_t n_vocab() const = 0;
    // The vocabulary fingerprint (tokenizer::fingerprint); the student's must match.
    virtual uint64_t vocab_fingerprint() const = 0;
    // For every row r of b (its tokens; b's targets are ignored): ids[r * k + j], p[r * k + j] for j < k, the
    // teacher's k most likely next tokens after the row's prefix within its sequence and their probabilities
    // (softmax over those k logits, summing to 1).
    virtual void top_k(const train_batch& b, int32_t k, std::vector<int32_t>& ids, std::vector<float>& p) = 0;
    // Sequence-level distillation data: continues every prompt (ids without BOS; the teacher sees BOS + prompt)
    // by up to cfg.n_new tokens, stopping before a BOS or EOS (llama2.c models delimit stories with BOS), and
    // returns the continuations. The default runs top_k on the whole growing batch once per token (quadratic,
    // but any teacher can do it); local_teacher overrides it with a KV cache. See teacher_generation.
    virtual std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                                       const teacher_generation& cfg);
};

// The next token after one row's top-k (ids, p: k entries), greedy at temperature 0, else drawn from r.
int32_t pick_next_token(std::span<const int32_t> ids, std::span<const float> p, float temperature, rng& r);

// A teacher model run locally (on its own backend) with the inference forward pass.
class local_teacher : public teacher {
 public:
    explicit local_teacher(const model& m);
    int32_t n_vocab() const override;
    uint64_t vocab_fingerprint() const override;
    void top_k(const train_batch& b, int32_t k, std::vector<int32_t>& ids, std::vector<float>& p) override;
    std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                               const teacher_generation& cfg) override;

 private:
    const model& m_;
    std::unique_ptr<kv_cache> cache_;
    std::unique_ptr<forward_pass> fwd_;
    std::vector<float> logits_;
};

// Row-wise top-k of logits {V, rows} with a softmax over the k kept values: ids/p {k, rows}.
void top_k_distribution(std::span<const float> logits, int32_t n_vocab, int32_t k, std::vector<int32_t>& ids,
                        std::vector<float>& p);
// Sum over rows of the entropy (nats) of target distributions p {k, rows} (rows of zeros contribute 0).
double target_entropy_sum(std::span<const float> p);

}  // namespace tandem
