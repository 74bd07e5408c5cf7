// Q4_0 matrix-vector products on CPU-class OpenCL devices (PoCL): out[m][n] = sum_k w[n][k] * x[m][k], w {K, N}
// Q4_0 in the "g16" layout below (backend::prepare_weight derives it), x f32 {K, M} quantized to Q8 blocks first
// (quantize_x_q8), out f32 {N, M}. Integer products in 16-bit lanes, like the cpu backend's int8 dot products.
//
// Why: PoCL targets skylake-avx512 here (no VNNI), and the f32 kernels of mul_mv_quant.cl spend ~3.6 vector
// instructions per 16 weights turning nibbles into exact floats and multiplying them: the best of them (a split
// layout, 2^23 float tricks) streamed 17-21 GB/s, 0.48-0.67 of PoCL's read kernel, bound by the decode. Here a
// work-item owns 16 weight rows, one per 16-bit lane of a short16 (a 256-bit register): per column, one load gives
// the nibbles of 4 blocks for all 16 rows, and each block costs a shift, a mask, a broadcast of the activation
// value, one 16-bit multiply and one add: ~5 256-bit instructions per 16 weights, where the f32 decode took
// ~3.6 512-bit ones (~7 256-bit: Zen 4 splits them). The int16 lanes cannot
// overflow over 16 columns (|q * x| <= 15 * 127, 16 terms: 30,480), so each half block is widened to int32 once.
// Per block and row the scale is applied once: (sum(q * x) - 8 * sum(x)) * d_w * d_x, the -8 * sum(x) term from
// quantize_x_q8. Measured on PoCL 3.1 / 2-vCPU Zen 4, 4096 x 4096, M = 1: 0.25-0.26 ms in L3 (the split kernel
// 0.37); from DRAM 0.6-0.8 of PoCL's read kernel in `tandem-bench ops` (the split kernel 0.48-0.67), except when
// PoCL runs a whole case at half speed, which it does from time to time with any kernel.
// The activations move by up to half a quantization step (the cpu backend's tolerance in the tests), so this is
// not offered on GPUs, which keep the exact f32 kernels of mul_mv_quant.cl.
//
// The g16 layout: rows in groups of 16 (the last padded with zero rows), each row's blocks in runs of 4 (the last
// padded with zero blocks: scale 0). Group g, run i is 1280 bytes at (g * runs + i) * 1280:
//   1024 bytes  32 columns c of 16 ushort lanes: lane r of column c holds element c of block 4i + b of row
//               16g + r in bits 4b .. 4b + 3 (b = 0..3), the nibble as stored (0..15, the weight is nibble - 8)
//    256 bytes  the f32 scales: block 4i + b of row 16g + r at float index 16b + r
// (f32 scales: PoCL has no hardware half conversion; 20 bytes per 32 weights against GGUF's 18.)
//
// The quantized activations (quantize_x_q8), for each x row m, blocks padded to 4 * runs (zeros past K):
//   q:   int16 per element, row m at q + m * 4 * runs * 32   (the values -127..127; 16 bits so that the multiply
//        reads them as a broadcast operand without a widening step)
//   d:   f32 per block, the step (max |x| / 127)
//   sum: int32 per block, -8 * sum(q)

#define G16_RUN_BYTES 1280
// Runs ahead that a work-item prefetches (PREFETCH_LINE, real on PoCL), all 20 lines of a run at once as it starts
// a run. On a 2-vCPU Xeon (PoCL's read kernel 20-21 GB/s) this kernel read 8-10 GB/s from DRAM without it although
// it runs at 21 GB/s from L3 (a work-item overlaps misses only through the out-of-order window); 2 runs (2.5 KiB)
// ahead: 0.41-0.49 of the read kernel -> 0.57-0.68 (4096 x 4096 / 11008 x 4096). 1-8 runs measured alike, and
// spreading the prefetches over the columns of a run was slower (0.49-0.53 against 0.58).
#define G16_PREFETCH_RUNS 2

#ifndef MV_ROWS
#define MV_ROWS 4
#endif

// The g16 layout of a Q4_0 weight of nb blocks per row and N rows; one work-item per (run i, group g).
__kernel void pack_q4_0_g16(__global const uchar* w, ulong w_off, __global uchar* dst, ulong dst_off, int nb, int N,
                            int runs) {
    const int i = get_global_id(0), g = get_global_id(1);
    if (i >= runs || g * 16 >= N) return;
    __global uchar* o = dst + dst_off + ((size_t)g * runs + i) * G16_RUN_BYTES;
    __global ushort* oq = (__global ushort*)o;
    __global float* os = (__global float*)(o + 1024);
    for (int r = 0; r < 16; ++r) {
        const int n = g * 16 + r;
        ushort lane[32];
        for (int c = 0; c < 32; ++c) lane[c] = 0;
        for (int b = 0; b < 4; ++b) {
            const int blk = 4 * i + b;
            const bool real = n < N && blk < nb;
            __global const uchar* src = w + w_off + ((size_t)n * nb + blk) * Q4_0_BYTES;
            os[16 * b + r] = real ? block_scale(src) : 0.f;
            if (!real) continue;
            // GGUF Q4_0: quant byte j holds element j (low nibble) and element j + 16 (high nibble).
            for (int j = 0; j < 16; ++j) {
                const uint byte = src[2 + j];
                lane[j] |= (ushort)((byte & 15u) << (4 * b));
                lane[j + 16] |= (ushort)((byte >> 4) << (4 * b));
            }
        }
        for (int c = 0; c < 32; ++c) oq[16 * c + r] = lane[c];
    }
}

// x f32 {K, M} at x + x_off into the Q8 blocks above (nbp = 4 * runs blocks per row); one work-item per
// (block, row). The same arithmetic as the cpu backend's activation quantization (backends/cpu/quant_acts.cpp):
// step d = max|x| / 127, x * (1 / d) clamped to +-127 and rounded to nearest even, so both backends multiply the
// same integers.
__kernel void quantize_x_q8(__global const uchar* x, ulong x_off, __global uchar* s, ulong q_off, ulong d_off,
                            ulong sum_off, int K, int M, int nbp) {
    const int b = get_global_id(0), m = get_global_id(1);
    if (b >= nbp || m >= M) return;
    const size_t blk = (size_t)m * nbp + b;
    __global short* q = VIEW(short, s, q_off) + blk * QK;
    if (b >= K / QK) {
        for (int j = 0; j < QK; ++j) q[j] = 0;
        VIEW(float, s, d_off)[blk] = 0.f;
        VIEW(int, s, sum_off)[blk] = 0;
        return;
    }
    __global const float* xb = CVIEW(float, x, x_off) + (size_t)m * K + (size_t)b * QK;
    float amax = 0.f;
    for (int j = 0; j < QK; ++j) amax = fmax(amax, fabs(xb[j]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    int sum = 0;
    for (int j = 0; j < QK; ++j) {
        const int v = convert_int_rte(clamp(xb[j] * id, -127.f, 127.f));
        q[j] = (short)v;
        sum += v;
    }
    VIEW(float, s, d_off)[blk] = d;
    VIEW(int, s, sum_off)[blk] = -8 * sum;
}

// sum over the 16 columns c0 .. c0 + 15 of a run of q[c] * x[c] for the 4 blocks, as int32 per row (the int16
// lanes hold 16 products of at most 15 * 127 each). xr: the run's 4 quantized activation blocks.
inline void g16_half(__global const ushort* q, __global const short* xr, const int c0, int16* tot) {
    short16 a0 = (short16)(0), a1 = (short16)(0), a2 = (short16)(0), a3 = (short16)(0);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const int c = c0 + j;
        const ushort16 v = vload16(c, q);
        a0 += as_short16(v & (ushort16)15) * (short16)xr[c];
        a1 += as_short16((v >> (ushort16)4) & (ushort16)15) * (short16)xr[QK + c];
        a2 += as_short16((v >> (ushort16)8) & (ushort16)15) * (short16)xr[2 * QK + c];
        a3 += as_short16(v >> (ushort16)12) * (short16)xr[3 * QK + c];
    }
    tot[0] += convert_int16(a0);
    tot[1] += convert_int16(a1);
    tot[2] += convert_int16(a2);
    tot[3] += convert_int16(a3);
}

// Rows 16g .. 16g + 15 of out for the MV_ROWS x rows from m0 (rows past M recompute the last one, not stored).
// Each run's 1280 bytes are read from memory for the first x row and from L1 for the others; the nibbles are
// unpacked again per row, which keeps one row's accumulators in registers (an array of them per row put them
// on the stack, a load and a store per multiply-add).
__kernel void mul_mv_q4_0_f32_g16(__global const uchar* w, ulong w_off, __global const uchar* s, ulong q_off,
                                  ulong d_off, ulong sum_off, __global uchar* out, ulong out_off, int N, int M,
                                  int runs) {
    const int g = get_global_id(0);
    const int m0 = get_global_id(1) * MV_ROWS;
    if (g * 16 >= N || m0 >= M) return;
    const int nbp = 4 * runs;
    __global const uchar* grp = w + w_off + (size_t)g * runs * G16_RUN_BYTES;
    float16 acc[MV_ROWS];
    for (int r = 0; r < MV_ROWS; ++r) acc[r] = (float16)(0.f);
    // Groups are contiguous, so the prefetch runs on into the next group's first runs (another work-item's, next
    // in line on this thread), up to the end of the weight.
    const size_t total_runs = (size_t)((N + 15) / 16) * runs;
    for (int i = 0; i < runs; ++i) {
        __global const ushort* q = (__global const ushort*)(grp + (size_t)i * G16_RUN_BYTES);
        __global const float* sc = (__global const float*)(grp + (size_t)i * G16_RUN_BYTES + 1024);
        if ((size_t)g * runs + i + G16_PREFETCH_RUNS < total_runs) {
            __global const uchar* ahead = grp + (size_t)(i + G16_PREFETCH_RUNS) * G16_RUN_BYTES;
            for (int l = 0; l < G16_RUN_BYTES; l += 64) PREFETCH_LINE(ahead + l);
        }
        for (int r = 0; r < MV_ROWS; ++r) {
            const size_t row = (size_t)min(m0 + r, M - 1), b0 = row * nbp + 4 * i;
            __global const short* xr = CVIEW(short, s, q_off) + b0 * QK;
            __global const float* xd = CVIEW(float, s, d_off) + b0;
            __global const int* xs = CVIEW(int, s, sum_off) + b0;
            int16 tot[4] = {(int16)(xs[0]), (int16)(xs[1]), (int16)(xs[2]), (int16)(xs[3])};
            g16_half(q, xr, 0, tot);
            g16_half(q, xr, 16, tot);
            // Two chains so the fma latency never serialises the loop.
            const float16 p0 = fma(convert_float16(tot[0]), vload16(0, sc) * xd[0],
                                   convert_float16(tot[1]) * (vload16(1, sc) * xd[1]));
            const float16 p1 = fma(convert_float16(tot[2]), vload16(2, sc) * xd[2],
                                   convert_float16(tot[3]) * (vload16(3, sc) * xd[3]));
            acc[r] += p0 + p1;
        }
    }
    const int valid = min(16, N - 16 * g);
    for (int r = 0; r < MV_ROWS; ++r) {
        if (m0 + r >= M) break;
        __global float* o = VIEW(float, out, out_off) + (size_t)(m0 + r) * N + 16 * g;
        if (valid == 16) {
            vstore16(acc[r], 0, o);
        } else {
            float lanes[16];
            vstore16(acc[r], 0, lanes);
            for (int l = 0; l < valid; ++l) o[l] = lanes[l];
        }
    }
}
