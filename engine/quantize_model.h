// Whole-model quantization (`tandem quantize`): reads a GGUF model, writes a copy with its 2-D weights quantized
// to Q8_0, Q4_0, Q4_K or Q6_K (or llama.cpp's Q4_K_M mix) and every metadata key carried over, in files llama.cpp
// reads.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/types.h"

namespace tandem {

struct quantize_result {
    int64_t n_quantized = 0;  // matrices written in the type the target chose for them
    int64_t n_kept = 0;       // the others: 1-D tensors (norms) copied unchanged, and fallbacks
    // "name: reason, written as TYPE" for each matrix that could not take its type (see matrix_quant_type).
    std::vector<std::string> fallbacks;
};

// What `tandem quantize` was asked for: a block type for every matrix, or with k_m the Q4_K_M mix (type q4_k).
struct quant_target {
    dtype type = dtype::q8_0;
    bool k_m = false;
    std::string name() const;  // "q8_0", ..., "q4_k_m"
};
// "q8_0", "q4_0", "q4_k", "q6_k" or "q4_k_m"; nullopt for anything else.
std::optional<quant_target> parse_quant_target(std::string_view name);

// The per-matrix block rule shared by quantize_model and synth: `type` when rows of `row_len` are whole blocks of
// it (32 weights, 256 for the K-quants) or it is not a block type. Otherwise *why is set to "name: row length N is
// not a multiple of the TYPE block size B" and the result is the fallback: q4_k -> q4_0 (the same 4.5 bits per
// weight) and q6_k -> q8_0 (the next larger type) when rows are whole 32-weight blocks, else f32.
dtype matrix_quant_type(const std::string& name, int64_t row_len, dtype type, std::string* why);
// The note for a fallback: why + ", kept as f32" or why + ", written as TYPE".
std::string fallback_note(const std::string& why, dtype used);

// The type a matrix `name` of shape ne (2-D or more) asks for under `target`, before the block rule:
//   q8_0, q4_k, q6_k: that type for every matrix.
//   q4_0: q4_0, except the output projection in q6_k when its rows are whole 256-weight super-blocks (llama.cpp's
//         default for Q4_0 files: the output projection is the most sensitive matrix).
//   q4_k_m: q4_k, except q6_k for the output projection, and for attn_v.weight and ffn_down.weight in the first and
//         last eighth of the n_layer blocks and every third block between (llama.cpp's Q4_K_M rule for llama).
// The output projection is output.weight, or token_embd.weight in a model without one (tied embeddings).
// With pure, `target.type` for every matrix.
dtype planned_quant_type(const std::string& name, const std::vector<int64_t>& ne, const quant_target& target,
                         int64_t n_layer, bool has_output, bool pure);

// Per-tensor choice: 1-D tensors (norms) are copied unchanged; every 2-D (or higher) tensor, token_embd and output
// included, takes planned_quant_type, then matrix_quant_type (stories260K's FFN down rows of 172 fall back to f32,
// its rows of 64 under q4_k to q4_0), each fallback listed in the result and logged ("quantize" logger); with `pure`
// a misfit is an error instead. Sources may be f32, f16, q8_0, q4_0, q4_k or q6_k. general.file_type is set to
// llama.cpp's ftype (7 Q8_0, 2 Q4_0, 14 Q4_K_S for q4_k, 15 Q4_K_M, 18 Q6_K) and general.quantization_version to 2.
// progress(done, total) is called per tensor.
// Throws tandem::error: TANDEM_ERR_INVALID_ARGUMENT for another type or a pure-mode misfit, else as the GGUF reader
// and writer do.
quantize_result quantize_model(const std::string& in_path, const std::string& out_path, const quant_target& target,
                               bool pure, const std::function<void(int64_t, int64_t)>& progress = {});
quantize_result quantize_model(const std::string& in_path, const std::string& out_path, dtype type, bool pure,
                               const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace tandem
