// Reference conversion of one row of any supported weight type to f32, written for clarity.
// Quantized block formats (q8_0, q4_0; layouts in dequant.cpp) join here as they are supported;
// dequant_supported() is the list.
#pragma once

#include <cstdint>

#include "engine/types.h"

namespace tandem {

bool dequant_supported(dtype t);
// Converts n elements (a multiple of the block size) starting at src to f32.
void dequantize_row(dtype t, const void* src, float* dst, int64_t n);

}  // namespace tandem
