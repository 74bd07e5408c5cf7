// Activations quantized to Q8 blocks for the integer dot products of the quantized matmuls, and the choice of
// instruction set those kernels run with.
// A row of K floats becomes K / 32 blocks: 32 int8 q (all of a row contiguous), an f32 scale d with x ~= d * q,
// and s = minus the sum of the block's 32 q (the offset terms of Q4_0's nibbles and of biased weights need it).
// Rounding: |x| / d rounded to nearest even, d = max |x| / 127 (0 for an all-zero block).
#pragma once

#include <cstdint>

// The instruction sets the quantized kernels are compiled for (by the build's -march): TANDEM_QUANT_AVX2 (AVX2, FMA,
// F16C) and TANDEM_QUANT_AVX512 (also AVX512 F/BW/VL and VNNI).
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define TANDEM_QUANT_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define TANDEM_QUANT_AVX512 1
#endif
#endif

namespace tandem::cpu {

constexpr int qk = 32;  // elements per Q8_0 / Q4_0 / activation block

// The quantized kernels' instruction sets: avx512 = AVX512-VNNI (dpbusd), avx2 = maddubs, scalar = plain loops.
enum class quant_path { scalar, avx2, avx512 };
// The best path compiled in, or a lower one named by TANDEM_CPU_QUANT_PATH=scalar|avx2|avx512 (read once; a path
// this build cannot run is an error), so the tests can run every path this machine can execute.
quant_path chosen_path();

// Quantizes nblk blocks of x (the same result on every path).
void quantize_row(quant_path path, const float* x, int8_t* q, float* d, int32_t* s, int64_t nblk);
// The same with block b stored at index b * stride (its 32 q at q + 32 * b * stride) and its sum times s_mult: for
// layouts that interleave the blocks of several rows.
void quantize_row_into(quant_path path, const float* x, int64_t nblk, int64_t stride, int32_t s_mult, int8_t* q,
                       float* d, int32_t* s);

}  // namespace tandem::cpu
