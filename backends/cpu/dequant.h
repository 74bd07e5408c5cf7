// Reference conversion of one row of any supported weight type to f32, written for clarity.
// Quantized block formats (q8_0, q4_0, q4_k, q6_k; layouts in dequant.cpp) join here as they are supported;
// dequant_supported() is the list.
#pragma once

#include <cstdint>

#include "engine/types.h"

namespace tandem {

bool dequant_supported(dtype t);
// Converts n elements (a multiple of the block size) starting at src to f32.
void dequantize_row(dtype t, const void* src, float* dst, int64_t n);

// Q4_K: the 6-bit scale *sc and min *m of sub-block j (0..7) from a super-block's 12 packed scale bytes
// (the packing is drawn in dequant.cpp). Shared by the quantizer's tests and the fast kernels' scalar paths.
void q4_k_scale_min(const uint8_t* scales, int j, int* sc, int* m);

}  // namespace tandem
