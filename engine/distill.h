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
#include "engine/train_graph.h"

namespace tandem {

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
};

// A teacher model run locally (on its own backend) with the inference forward pass.
class local_teacher : public teacher {
 public:
    explicit local_teacher(const model& m);
    int32_t n_vocab() const override;
    uint64_t vocab_fingerprint() const override;
    void top_k(const train_batch& b, int32_t k, std::vector<int32_t>& ids, std::vector<float>& p) override;

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
