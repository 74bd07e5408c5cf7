// Matrix-vector products with quantized weights (decode, small batches): out[m][n] = sum_k w[n][k] * x[m][k]
// with w {K, N} Q8_0 / Q4_0 (K a multiple of 32), x f32 {K, M}, out f32 {N, M}. Each weight row is read once per
// MV_ROWS x rows. The activations stay f32 and the weights are dequantized exactly (GPUs; also the Q8_0 kernels
// and unprepared weights on CPU devices).
// Per 32-weight block: quants widened to two float16, multiplied by x (one mul + one fma), and the block scale
// applied once to that partial (fma into the accumulator); two accumulators alternate between blocks so that
// the fma latency never serialises the loop.
//   *_row:   one output row n per work-item, reading GGUF blocks in place (scale assembled from bytes: devices
//            without cl_khr_fp16, PoCL among them, have no hardware half conversion: ~20 scalar instructions
//            a block, as much as the vector work). Unprepared weights on CPU devices.
//   (Q4_0 on CPU devices takes kernels/mul_mv_q4_0_g16.cl instead: integer products with Q8 activations.)
//   *_wide:  Q8_0 prepared (widen_q8_0): 36-byte blocks with an f32 scale in front of the quants, one
//            stream; 0.47-0.52 of the read limit became 0.61-0.85 (a split copy with the scales in a second
//            array had measured slower from DRAM).
//   *_wg:    one work-group of WGS work-items per output row, each taking every WGS-th block, then a local-memory
//            reduction (GPUs: neighbouring work-items read neighbouring blocks). The original layout.
// Measured on PoCL 3.1 / 2-vCPU Zen 4 (loaded), ratio to bench_read_f32_chunked timed in the same run (fastest
// of 30), M = 1, K = 4096, N = 4096 and 11008: Q4_0 before 0.36-0.38, row 0.42-0.45, then a "split" layout
// (quants of 4 blocks interleaved per 32-bit lane so that one mask gave each nibble as the float 2^23 + q, scales
// pre-divided by the nibble's place value) 0.48-0.67: it streamed 17-21 GB/s whatever the memory did, bound by
// the ~3.6 vector instructions per 16 weights of exact f32 decoding; mul_mv_q4_0_g16.cl replaced it. Q8_0 before
// 0.64-0.69, row mostly ~0.77 (0.54-1.30). Both are bound by the decode, not by memory (in L2 the ratios are
// about the same). Tried and dropped:
//   - a split Q8_0 copy: faster in cache (1.07 against 0.95) but slower from DRAM (0.50 against 0.8), with
//     or without row padding or the scales placed after each row;
//   - for Q4_0: the scales inline with each run of 4 blocks; subtracting 8 x block-sum per block instead of 8
//     per quant; 4 blocks per loop step; larger work-groups; (v | 0x4B000000) & (mask | 0x4B000000) per field
//     instead of the ternary-logic op (faster in L3, slower from DRAM).
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

// How far ahead the row kernels prefetch (PREFETCH_LINE). Wide Q8_0 on a 2-vCPU Xeon, ratio to PoCL's read kernel
// (4096 x 4096 / 11008 x 4096): no prefetch 0.66 / 0.74, 1 KiB 0.65 / 0.74, 2 KiB 0.70 / 0.84, 4 KiB 0.73-0.79 /
// 0.87-0.92, 8 and 16 KiB as 4.
#define MV_PREFETCH_BYTES 4096

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
#ifdef TANDEM_PREFETCH
    __global const uchar* w_end = w + w_off + (size_t)N * nb * bb;
#endif
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        __global const uchar* b0 = wr + (size_t)i * bb;
#ifdef TANDEM_PREFETCH
        // Each pair's bytes MV_PREFETCH_BYTES ahead (rows are contiguous: on into the next work-item's row), every
        // line at least once (two prefetches at most 64 bytes apart cover a pair of at most 72 bytes).
        __global const uchar* ahead = b0 + MV_PREFETCH_BYTES;
        if (ahead + 2 * bb <= w_end) {
            PREFETCH_LINE(ahead);
            PREFETCH_LINE(ahead + bb);
        }
#endif
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
