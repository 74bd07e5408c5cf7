// The LoRA training graph: the llama forward pass of engine/forward.cpp with every activation the backward needs
// kept per layer, the output head and cross-entropy on every row, and the backward pass layer by layer in reverse.
// Gradients flow through the frozen (possibly quantized) base weights and reach only the adapter's A and B.
// A batch is B sequences of T tokens laid out as one ragged batch of B*T rows; sequence b attends to rows
// [b*T, b*T + t] (its own causal prefix), with K and V kept as f32 {kv_dim, B*T} tensors standing in for the cache.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/lora.h"
#include "engine/model.h"

namespace tandem {

// One training batch: n_seq sequences of n_tok tokens, row r = b * n_tok + t.
struct train_batch {
    int32_t n_seq = 0, n_tok = 0;
    std::vector<int32_t> tokens;      // {n_seq * n_tok} input tokens (row t of a sequence sits at position t)
    int32_t k = 1;                    // target entries per row (1: hard labels; distillation: the teacher's top-k)
    std::vector<int32_t> target_ids;  // {k, rows}: row r's entries at [r * k, r * k + k)
    std::vector<float> target_p;      // {k, rows}: their probabilities; a row of zeros is masked (no loss)
    int64_t rows() const { return int64_t(n_seq) * n_tok; }
};

// The loss of one batch: sum over unmasked rows and their count (loss = mean = sum / rows).
struct train_loss {
    double sum = 0;
    int64_t rows = 0;
    double mean() const { return rows ? sum / double(rows) : 0; }
};

class train_graph {
 public:
    // Works on m's backend with the adapter's parameters (which must live on the same backend). Throws
    // tandem::error(TANDEM_ERR_UNSUPPORTED) naming the first op the backend cannot run for training.
    train_graph(const model& m, const lora_adapter& a);
    ~train_graph();
    train_graph(const train_graph&) = delete;
    train_graph& operator=(const train_graph&) = delete;

    // Forward pass and loss only (validation). Per-row losses are summed on the host in double.
    train_loss loss(const train_batch& b);
    // Forward, loss and backward: afterwards grads()[i] holds d(mean loss)/d(parameters()[i]) of the adapter.
    // A batch with every row masked leaves zero gradients.
    train_loss loss_and_grad(const train_batch& b);
    // Gradient tensors {same shapes as lora_adapter::parameters()}, f32 on the backend.
    const std::vector<tensor>& grads() const { return grads_; }

    // The ops the training graph runs (for support checks and messages).
    static const std::vector<op>& ops_used();

 private:
    struct impl;
    std::unique_ptr<impl> p_;
    std::vector<tensor> grads_;
};

// Throws tandem::error(TANDEM_ERR_UNSUPPORTED) naming the first training op `be` lacks for the model's weights.
void require_training_support(const model& m);

}  // namespace tandem
