// Row quantizers for the GGUF block formats Q8_0 and Q4_0 (layouts in backends/cpu/dequant.cpp), the inverse
// of dequantize_row: used by `tandem quantize` and by tests. Output is byte-compatible with the formats
// llama.cpp reads; the rounding rules are stated at each function.
#pragma once

#include <cstdint>

#include "engine/types.h"

namespace tandem {

// True for the types quantize_row can produce (q8_0, q4_0).
bool quantize_supported(dtype t);

// Quantizes n floats (n a multiple of 32) into n / 32 blocks at dst (dtype_row_bytes(t, n) bytes).
//   q8_0: d = max|x| / 127, q = round(x / d) (half away from zero), d stored as fp16.
//   q4_0: m = the element of largest magnitude, with its sign; d = m / -8;
//         nibble = min(15, round(x / d + 8)) (x / d + 8 lies in [0, 16], so only the top needs a clamp);
//         the element m itself decodes exactly to (0 - 8) * d = m (up to the fp16 rounding of d).
// An all-zero block gets d = 0. Throws tandem::error (TANDEM_ERR_INVALID_ARGUMENT) for another type or an n
// that is not a multiple of 32.
void quantize_row(dtype t, const float* src, void* dst, int64_t n);

}  // namespace tandem
