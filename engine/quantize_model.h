// Whole-model quantization (`tandem quantize`): reads a GGUF model, writes a copy with its 2-D weights
// quantized to Q8_0 or Q4_0 and every metadata key carried over, in files llama.cpp reads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/types.h"

namespace tandem {

struct quantize_result {
    int64_t n_quantized = 0;  // tensors written in the target type
    int64_t n_kept = 0;       // the others: 1-D tensors (norms) copied unchanged, and fallbacks
    // "name: reason" for each 2-D tensor that could not take the target type and was written as F32.
    std::vector<std::string> fallbacks;
};

// Per-tensor choice: 1-D tensors (norms) are copied unchanged; every 2-D (or higher) tensor, token_embd and
// output included, becomes `type`. A matrix whose row length is not a multiple of 32 (stories260K's FFN down
// rows have 172) falls back to F32, is listed in the result and logged ("quantize" logger); with `pure` it is
// an error instead. Sources may be F32, F16, Q8_0 or Q4_0. general.file_type is set to 7 (mostly Q8_0) or
// 2 (mostly Q4_0) and general.quantization_version to 2. progress(done, total) is called per tensor.
// Throws tandem::error: TANDEM_ERR_INVALID_ARGUMENT for another type or a pure-mode misfit, else as the
// GGUF reader and writer do.
// The per-matrix rule shared by quantize_model and synth: `type` when rows of `row_len` are whole 32-weight
// blocks (or `type` is not a block type), else F32 with *why set to "name: row length ... block size 32".
dtype matrix_quant_type(const std::string& name, int64_t row_len, dtype type, std::string* why);

quantize_result quantize_model(const std::string& in_path, const std::string& out_path, dtype type, bool pure,
                               const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace tandem
