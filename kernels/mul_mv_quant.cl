// Matrix-vector products with quantized weights (decode, small batches): out[m][n] = sum_k w[n][k] * x[m][k]
// with w {K, N} Q8_0 / Q4_0 (K a multiple of 32), x f32 {K, M}, out f32 {N, M}. Each weight row is read once per
// MV_ROWS x rows. The activations stay f32 and the weights are dequantized exactly (the opencl contract of
// tests/backend_ops/cases_quant.cpp): quantizing x to int8 for integer dot products would be cheaper on the ALUs
// but changes the results, so it is not offered here (and PoCL targets skylake-avx512 here: no VNNI anyway).
// Per 32-weight block: quants widened to two float16, multiplied by x (one mul + one fma), and the block scale
// applied once to that partial (fma into the accumulator); two accumulators alternate between blocks so that
// the fma latency never serialises the loop.
//   *_row:   one output row n per work-item, reading GGUF blocks in place (scale assembled from bytes: devices
//            without cl_khr_fp16, PoCL among them, have no hardware half conversion: ~20 scalar instructions
//            a block, as much as the vector work). Unprepared weights on CPU devices.
//   *_split: Q4_0 on the layout backend::prepare_weight derives (split_q4_0 below): all quants first, runs of
//            4 blocks packed so that one uint16 load, one shift and a mask per 16 nibbles give all 128 nibbles as
//            exact floats (no widening per block, no shift per nibble), then one f32 scale per block, read as a
//            broadcast memory operand: no half decode left, for 2 more bytes per block. PoCL runs a work-group as
//            a loop over work-items, so a group of rows is one contiguous stream either way.
//   *_wide:  Q8_0 prepared likewise (widen_q8_0): 36-byte blocks with an f32 scale in front of the quants, one
//            stream; 0.47-0.52 of the read limit became 0.61-0.85 (a split copy with the scales in a second
//            array had measured slower from DRAM).
//   *_wg:    one work-group of WGS work-items per output row, each taking every WGS-th block, then a local-memory
//            reduction (GPUs: neighbouring work-items read neighbouring blocks). The original layout.
// Measured on PoCL 3.1 / 2-vCPU Zen 4 (loaded), ratio to bench_read_f32_chunked timed in the same run (fastest
// of 30), M = 1, K = 4096, N = 4096 and 11008: Q4_0 before 0.36-0.38, row 0.42-0.45, split with one block per
// step 0.48-0.55, split with a shift per nibble 0.57-0.60, as below 0.48-0.67 (it streams 17-21 GB/s, so the
// ratio follows PoCL's read rate, 30-39 GB/s; in L3, 4096 x 4096: 0.40 ms became 0.37); Q8_0 before 0.64-0.69,
// row mostly ~0.77 (0.54-1.30). Both are bound by the decode, not by memory (in L2 the ratios are about the
// same). Tried and dropped:
//   - a split Q8_0 copy: faster in cache (1.07 against 0.95) but slower from DRAM (0.50 against 0.8), with
//     or without row padding or the scales placed after each row;
//   - the scales inline with each run of 4 Q4_0 blocks (one stream): no gain;
//   - subtracting 8 x block-sum per block instead of 8 per quant, 4 blocks per loop step, larger work-groups;
//   - (v | 0x4B000000) & (mask | 0x4B000000) per field instead of the ternary-logic op and its register copy:
//     faster in L3 (0.37 -> 0.35 ms) but consistently slower from DRAM (0.44 -> 0.55 ms, 3 alternating rounds).
// Q4 nibbles become floats as as_float(0x4B000000 | q) - (2^23 + 8): exact (2^23 + q is an f32 integer), ~8%
// faster than convert_float16 on PoCL; Q8 keeps convert_float16 (the same trick needs an extra xor there and
// measured 13% slower).

#ifndef MV_ROWS
#define MV_ROWS 4
#endif
#ifndef WGS
#define WGS 64
#endif

// 16 nibbles (0..15) as floats minus 8, exactly.
inline float16 q4_nibbles(uint16 v) { return as_float16(v | (uint16)0x4B000000u) - 8388616.f; }

// sum_j q[j] * xb[j] over one block's 32 quants (unscaled): q4 = 16 bytes of nibble pairs (byte j: elements j and
// j + 16), q8 = 32 signed bytes.
inline float16 block_dot(__global const uchar* q, __global const float* xb, const int is_q4) {
    float16 lo, hi;
    if (is_q4) {
        const uint16 v = convert_uint16(vload16(0, q));
        lo = q4_nibbles(v & (uint16)15u);
        hi = q4_nibbles(v >> (uint16)4u);
    } else {
        lo = convert_float16(vload16(0, (__global const char*)q));
        hi = convert_float16(vload16(1, (__global const char*)q));
    }
    return fma(hi, vload16(1, xb), lo * vload16(0, xb));
}

// The MV_ROWS activation rows from m0 (rows past M recompute the last one) and their zeroed accumulators.
inline void mv_rows_init(__global const float** xr, float16* a0, float16* a1, __global const uchar* x, ulong x_off,
                         int m0, int M, int K) {
    for (int r = 0; r < MV_ROWS; ++r) {
        xr[r] = CVIEW(float, x, x_off) + (size_t)min(m0 + r, M - 1) * K;
        a0[r] = (float16)(0.f);
        a1[r] = (float16)(0.f);
    }
}

// Output row n of the activation rows from m0 that exist.
inline void mv_rows_store(__global uchar* out, ulong out_off, const float16* a0, const float16* a1, int m0, int M,
                          int N, int n) {
    for (int r = 0; r < MV_ROWS; ++r)
        if (m0 + r < M) VIEW(float, out, out_off)[(size_t)(m0 + r) * N + n] = hsum16(a0[r] + a1[r]);
}

// A block's scale: fp16 bits at its start (GGUF), or an f32 (the wide Q8_0 layout, widen_q8_0).
inline float mv_scale(__global const uchar* b, const int wide) {
    return wide ? *(__global const float*)b : block_scale(b);
}

// One output row n per work-item for the MV_ROWS x rows from m0, blocks read in place: GGUF Q8_0 / Q4_0, or
// (wide) Q8_0 as 36-byte blocks with an f32 scale in front of the quants.
inline void mul_mv_q_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                         __global uchar* out, ulong out_off, int K, int N, int M, const int is_q4, const int wide) {
    const int n = get_global_id(0);
    const int m0 = get_global_id(1) * MV_ROWS;
    if (n >= N || m0 >= M) return;
    const int nb = K / QK, bb = wide ? 36 : is_q4 ? Q4_0_BYTES : Q8_0_BYTES, qo = wide ? 4 : 2;
    __global const uchar* wr = w + w_off + (size_t)n * nb * bb;
    __global const float* xr[MV_ROWS];
    float16 a0[MV_ROWS], a1[MV_ROWS];
    mv_rows_init(xr, a0, a1, x, x_off, m0, M, K);
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        __global const uchar* b0 = wr + (size_t)i * bb;
        const float d0 = mv_scale(b0, wide), d1 = mv_scale(b0 + bb, wide);
        for (int r = 0; r < MV_ROWS; ++r) {
            a0[r] = fma((float16)d0, block_dot(b0 + qo, xr[r] + i * QK, is_q4), a0[r]);
            a1[r] = fma((float16)d1, block_dot(b0 + bb + qo, xr[r] + (i + 1) * QK, is_q4), a1[r]);
        }
    }
    if (i < nb) {
        __global const uchar* b0 = wr + (size_t)i * bb;
        const float d0 = mv_scale(b0, wide);
        for (int r = 0; r < MV_ROWS; ++r) a0[r] = fma((float16)d0, block_dot(b0 + qo, xr[r] + i * QK, is_q4), a0[r]);
    }
    mv_rows_store(out, out_off, a0, a1, m0, M, N, n);
}

// Q4_0 in the split layout (split_q4_0): w holds the quants from byte 0, the f32 scales from byte s_off. Each
// run of 4 blocks is one uint16 whose lane j holds element j of the 4 blocks in bits 4b..4b+3 and element j + 16
// in bits 16 + 4b..19 + 4b (b = 0..3), so that one shift (v >> 16) and a mask per nibble give all 128 nibbles in
// place: (v & 15 << 4b) | 0x4B000000 is the float 2^23 + q * 16^b, exact, and subtracting 2^23 + 8 * 16^b leaves
// (q - 8) * 16^b. The stored scale is d / 16^b, so the products come out as they would unscaled (a power of two
// changes no rounding). The blocks past the last whole run are stored as they are (GGUF nibble order), scale d.
inline float16 q4_field(uint16 v, uint mask, float bias) {
    return as_float16((v & (uint16)mask) | (uint16)0x4B000000u) - bias;
}

__kernel void mul_mv_q4_0_f32_split(__global const uchar* w, ulong s_off, __global const uchar* x, ulong x_off,
                                    __global uchar* out, ulong out_off, int K, int N, int M) {
    const int n = get_global_id(0);
    const int m0 = get_global_id(1) * MV_ROWS;
    if (n >= N || m0 >= M) return;
    const int nb = K / QK;
    __global const uchar* q = w + (size_t)n * nb * (QK / 2);
    __global const float* s = CVIEW(float, w, s_off) + (size_t)n * nb;
    __global const float* xr[MV_ROWS];
    float16 a0[MV_ROWS], a1[MV_ROWS];
    mv_rows_init(xr, a0, a1, x, x_off, m0, M, K);
    int i = 0;
    for (; i + 3 < nb; i += 4) {
        const uint16 v = vload16(0, (__global const uint*)(q + (size_t)i * (QK / 2)));
        const uint16 u = v >> (uint16)16u;
        const float16 l0 = q4_field(v, 0xFu, 8388616.f), h0 = q4_field(u, 0xFu, 8388616.f);
        const float16 l1 = q4_field(v, 0xF0u, 8388736.f), h1 = q4_field(u, 0xF0u, 8388736.f);
        const float16 l2 = q4_field(v, 0xF00u, 8390656.f), h2 = q4_field(u, 0xF00u, 8390656.f);
        const float16 l3 = q4_field(v, 0xF000u, 8421376.f), h3 = q4_field(u, 0xF000u, 8421376.f);
        for (int r = 0; r < MV_ROWS; ++r) {
            __global const float* xb = xr[r] + i * QK;
            a0[r] = fma((float16)s[i], fma(h0, vload16(1, xb), l0 * vload16(0, xb)), a0[r]);
            a1[r] = fma((float16)s[i + 1], fma(h1, vload16(3, xb), l1 * vload16(2, xb)), a1[r]);
            a0[r] = fma((float16)s[i + 2], fma(h2, vload16(5, xb), l2 * vload16(4, xb)), a0[r]);
            a1[r] = fma((float16)s[i + 3], fma(h3, vload16(7, xb), l3 * vload16(6, xb)), a1[r]);
        }
    }
    for (; i < nb; ++i)
        for (int r = 0; r < MV_ROWS; ++r)
            a0[r] = fma((float16)s[i], block_dot(q + (size_t)i * (QK / 2), xr[r] + i * QK, 1), a0[r]);
    mv_rows_store(out, out_off, a0, a1, m0, M, N, n);
}

// Q8_0 in the wide layout (widen_q8_0): 36-byte blocks, an f32 scale then the 32 quants, so that no half decode
// is left in the loop (PoCL has no hardware half conversion: the two scales of a pair of 34-byte blocks cost
// ~40 scalar instructions against ~16 vector ones for their 64 quants).
__kernel void mul_mv_q8_0_f32_wide(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                   __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mv_q_row(w, w_off, x, x_off, out, out_off, K, N, M, 0, 1);
}

inline void mul_mv_q_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                        __global uchar* out, ulong out_off, int K, int N, int M, __local float* part,
                        const int is_q4) {
    const int n = get_group_id(0), lid = get_local_id(0);
    const int m0 = get_group_id(1) * MV_ROWS;
    const int nb = K / QK, bb = is_q4 ? Q4_0_BYTES : Q8_0_BYTES;
    __global const uchar* wr = w + w_off + (size_t)n * nb * bb;
    __global const float* xr[MV_ROWS];
    float16 acc[MV_ROWS];
    for (int r = 0; r < MV_ROWS; ++r) {
        xr[r] = CVIEW(float, x, x_off) + (size_t)min(m0 + r, M - 1) * K;
        acc[r] = (float16)(0.f);
    }
    for (int i = lid; i < nb; i += WGS) {
        const float d = block_scale(wr + (size_t)i * bb);
        for (int r = 0; r < MV_ROWS; ++r)
            acc[r] = fma((float16)d, block_dot(wr + (size_t)i * bb + 2, xr[r] + i * QK, is_q4), acc[r]);
    }
    for (int r = 0; r < MV_ROWS; ++r) part[r * WGS + lid] = hsum16(acc[r]);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s)
            for (int r = 0; r < MV_ROWS; ++r) part[r * WGS + lid] += part[r * WGS + lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid < MV_ROWS && m0 + lid < M) VIEW(float, out, out_off)[(size_t)(m0 + lid) * N + n] = part[lid * WGS];
}

__kernel void mul_mv_q8_0_f32_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mv_q_row(w, w_off, x, x_off, out, out_off, K, N, M, 0, 0);
}

__kernel void mul_mv_q4_0_f32_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mv_q_row(w, w_off, x, x_off, out, out_off, K, N, M, 1, 0);
}

__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void mul_mv_q8_0_f32_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                        __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float part[MV_ROWS * WGS];
    mul_mv_q_wg(w, w_off, x, x_off, out, out_off, K, N, M, part, 0);
}

__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void mul_mv_q4_0_f32_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                        __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float part[MV_ROWS * WGS];
    mul_mv_q_wg(w, w_off, x, x_off, out, out_off, K, N, M, part, 1);
}

// The split layout of a Q4_0 weight of `blocks` blocks, rows of nb blocks one after another (see
// mul_mv_q4_0_f32_split): the quants of block b at dst + 16 b, as 16 lanes of a run of 4 blocks (the first block
// of a whole run writes the run) or as they are past the last whole run of its row; its scale as f32 at
// dst + s_off + 4 b, divided by 16^(b % 4) in a run. One work-item per block.
__kernel void split_q4_0(__global const uchar* w, ulong w_off, __global uchar* dst, ulong s_off, ulong blocks,
                         int nb) {
    const size_t b = get_global_id(0);
    if (b >= blocks) return;
    __global const uchar* src = w + w_off + b * Q4_0_BYTES;
    const int i = (int)(b % (size_t)nb);
    const bool in_run = i < nb / 4 * 4;
    if (!in_run) {
        vstore16(vload16(0, src + 2), b, dst);
    } else if (i % 4 == 0) {
        for (int j = 0; j < 16; ++j) {
            uint lane = 0;
            for (int c = 0; c < 4; ++c) {
                const uint byte = src[c * Q4_0_BYTES + 2 + j];
                lane |= (byte & 15u) << (4 * c) | (byte >> 4) << (16 + 4 * c);
            }
            vstore4(as_uchar4(lane), 0, dst + b * 16 + 4 * j);
        }
    }
    VIEW(float, dst, s_off)[b] = block_scale(src) / (in_run ? (float)(1 << (4 * (i % 4))) : 1.f);
}

// The wide layout of a Q8_0 weight (mul_mv_q8_0_f32_wide): block b as its scale in f32 at dst + 36 b, then its
// 32 quants. One work-item per block.
__kernel void widen_q8_0(__global const uchar* w, ulong w_off, __global uchar* dst, ulong dst_off, ulong blocks) {
    const size_t b = get_global_id(0);
    if (b >= blocks) return;
    __global const uchar* src = w + w_off + b * Q8_0_BYTES;
    __global uchar* o = dst + dst_off + b * 36;
    *(__global float*)o = block_scale(src);
    vstore16(vload16(0, src + 2), 0, o + 4);
    vstore16(vload16(1, src + 2), 0, o + 20);
}
