// Row quantizers for the GGUF block formats Q8_0, Q4_0, Q4_K and Q6_K (layouts in backends/cpu/dequant.cpp), the
// inverse of dequantize_row: used by `tandem quantize`, `tandem synth` and by tests. Output is byte-compatible with
// the formats llama.cpp reads; the rounding rules are stated at each function.
#pragma once

#include <cstdint>

#include "engine/types.h"

namespace tandem {

// True for the types quantize_row can produce (q8_0, q4_0, q4_k, q6_k).
bool quantize_supported(dtype t);

// Quantizes n floats (n a multiple of the type's block size: 32, or 256 for the K-quants) into blocks at dst
// (dtype_row_bytes(t, n) bytes).
//   q8_0: d = max|x| / 127, q = round(x / d) (half away from zero), d stored as fp16.
//   q4_0: m = the element of largest magnitude, with its sign; d = m / -8;
//         nibble = min(15, round(x / d + 8)) (x / d + 8 lies in [0, 16], so only the top needs a clamp);
//         the element m itself decodes exactly to (0 - 8) * d = m (up to the fp16 rounding of d).
//   q4_k: per sub-block of 32, the scale a > 0 and min b >= 0 of x ~= a * q - b (q in 0..15) with the least squared
//         error over a small search of grid spacings (each candidate's a, b solved by least squares); then
//         d = max a / 63 and dmin = max b / 63 (fp16), the 6-bit sc = round(a / d), m = round(b / dmin), each pair
//         replaced by the best of its +-1 neighbours; d and dmin refitted by least squares over the super-block (kept
//         only if that lowers the error); finally every q is re-rounded against the decoded scales,
//         q = clamp(round((x + dmin m) / (d sc)), 0, 15).
//   q6_k: per group of 16, the scale s of x ~= s * q (q in -32..31) with the least squared error over a search of
//         spacings m / k, k around -32 and +31 (m the largest-magnitude element); then d = s_max / -128 (s_max the
//         group scale of largest magnitude, so it maps to -128 exactly) as fp16, sc = clamp(round(s / d), -128, 127),
//         d refitted as above, q = clamp(round(x / (d sc)), -32, 31).
// (K-quant rounding is to nearest with ties upward.) The K-quant searches cost ~100 ns per weight on one core (q4_0:
// ~3 ns); quantize_model spreads rows over threads.
// An all-zero block decodes to zeros. Throws tandem::error (TANDEM_ERR_INVALID_ARGUMENT) for another type or an n
// that is not a multiple of the block size.
void quantize_row(dtype t, const float* src, void* dst, int64_t n);

}  // namespace tandem
