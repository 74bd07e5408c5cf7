// The llama forward pass, written once against the backend interface. One call runs a batch of rows;
// each row is one token at an explicit position and cache slot with its own attention layout, so the
// same call serves prefill (causal chain), decode (one row), token-tree verification and ragged batches
// of several sequences (rows of different sessions, each attending to its own slots).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/model.h"

namespace tandem {

struct batch_row {
    int32_t token = 0;
    int32_t pos = 0;       // position for RoPE
    int32_t slot = 0;      // KV cache slot this token's K/V are written to
    int32_t kv_begin = 0;  // attends to slots [kv_begin, kv_begin + kv_len) ...
    int32_t kv_len = 0;
    int32_t tree = -1;     // ... and to the slots on the walk tree -> parent -> ... (-1: none)
    int32_t parent = -1;   // this row's parent in the walk table (-1: none), see forward_pass::run
    bool logits = false;   // return this row's logits
};

// A walk-only entry: a token already in the cache (at `slot`) that tree walks pass through without it being
// computed again, e.g. the ancestors of a draft-tree node expanded in an earlier pass.
struct context_entry {
    int32_t slot = 0;
    int32_t parent = -1;  // index in the walk table, -1 at the top
};

// Rows for a causal chain of tokens at positions [pos0, pos0 + n) stored at slots base + pos; a sequence
// that owns slots [base, base + capacity). Only the last row returns logits unless all_logits.
std::vector<batch_row> causal_rows(std::span<const int32_t> tokens, int32_t pos0, int32_t base, bool all_logits);

// Layer split: hidden states in place of token embeddings, or out in place of logits. in: M x n_embd floats
// (the rows' residual stream entering the first layer run); out: receives M x n_embd floats after the last
// layer run (before the final norm).
struct hidden_io {
    std::span<const float> in;
    std::vector<float>* out = nullptr;
};

class forward_pass {
   public:
    forward_pass(const model& m, kv_cache& cache);

    // Runs the rows through the model; writes n_logit_rows x n_vocab floats to `logits` (rows in batch
    // order). Tree walks index the walk table: the M rows first, then the `context` entries. Throws
    // tandem::error(TANDEM_ERR_INVALID_ARGUMENT) for an invalid batch (token, slot or parent out of range, a
    // walk that does not end) before anything is computed.
    // With `io`, the rows' hidden states are read from io->in instead of the embedding table (their tokens are
    // then ignored) and/or written to io->out after the layers (see hidden_io).
    void run(std::span<const batch_row> rows, std::vector<float>& logits, std::span<const context_entry> context = {},
             const hidden_io* io = nullptr);
    // The same, with the logits read in place when the backend's memory is host memory (the cpu backends): the
    // span stays valid until the next pass. Other backends download them into `fallback`, which the span views.
    // (A 9-row verification pass of the 1.1B shape otherwise copies 1.15 MB of logits that are read once.)
    std::span<const float> run_view(std::span<const batch_row> rows, std::vector<float>& fallback,
                                    std::span<const context_entry> context = {}, const hidden_io* io = nullptr);

    // Early exit (self-speculation): run only the first n layers, then the final norm and output head.
    // 0 = all layers.
    void set_exit_layer(int32_t n) { set_layers(0, n); }
    // Runs layers [first, end) only (end 0 = all): the edge runs [0, K), the cloud [K, n_layer). Layers outside
    // the range leave their KV cache untouched. Throws tandem::error for an empty or out-of-range range.
    void set_layers(int32_t first, int32_t end);

   private:
    // run() up to the logits, left in the scratch buffer; returns how many rows of them there are.
    int64_t compute(std::span<const batch_row> rows, std::span<const context_entry> context, const hidden_io* io);
    void validate(std::span<const batch_row> rows, std::span<const context_entry> context) const;
    void reserve(int64_t n_rows, int64_t n_logits);
    tensor act(size_t offset, int64_t ne0, int64_t ne1, int64_t ne2 = 1, dtype t = dtype::f32) const;
    // y += sum over the model's adapters of factor * B (A x) for target t of layer l. x {K, M}; y {N, M}.
    void apply_adapters(int32_t l, lora_target t, const tensor& x, const tensor& y);

    const model& m_;
    kv_cache& cache_;
    backend& be_;
    int64_t cap_rows_ = 0, cap_logits_ = 0, cap_rank_ = 0;
    std::unique_ptr<buffer> scratch_;
    // Activation views for the current capacity (ne1 = rows), set by reserve().
    size_t off_x_ = 0, off_xb_ = 0, off_q_ = 0, off_k_ = 0, off_v_ = 0, off_att_ = 0, off_tmp_ = 0, off_gate_ = 0,
           off_up_ = 0, off_logits_ = 0, off_ids_ = 0;
    // LoRA scratch, only when the model has adapters: h = A x {rank, M} and B h {max projection width, M}.
    size_t off_lora_h_ = 0, off_lora_y_ = 0;
    std::vector<int32_t> host_ints_;
    int32_t first_layer_ = 0, end_layer_ = 0;
};

}  // namespace tandem
