// Q4_0 matrix-vector products on CPU-class OpenCL devices (PoCL): out[m][n] = sum_k w[n][k] * x[m][k], w {K, N}
// Q4_0 in the "g16" layout below (backend::prepare_weight derives it), x f32 {K, M} quantized to Q8 blocks first
// (quantize_x_q8), out f32 {N, M}. Integer products in 16-bit lanes, like the cpu backend's int8 dot products.
//
// Why: PoCL targets skylake-avx512 here (no VNNI), and the f32 kernels of mul_mv_quant.cl spend ~3.6 vector
// instructions per 16 weights turning nibbles into exact floats and multiplying them: the best of them (a split
// layout, 2^23 float tricks) streamed 17-21 GB/s, 0.48-0.67 of PoCL's read kernel, bound by the decode. Here a
// work-item owns 16 weight rows. One 512-bit load gives, for all 16 rows, two adjacent columns of 4 blocks (a
// 32-bit lane per row: the two columns in its 16-bit halves, 4 nibbles each, one per block); per block a mask
// (or, for block 3, a 16-bit shift) isolates the nibble pair and one vpmaddwd multiplies it by the activation
// pair broadcast from memory and adds the two products into int32: 3 instructions (mask or shift, vpmaddwd,
// vpaddd) per 32 weights, 2 where the CPU has AVX512-VNNI (vpdpwssd adds into the accumulator itself). Where the
// device compiler targets AVX-512BW or AVX2 (PoCL on x86 defines __AVX512BW__ / __AVX2__), madd_pairs calls
// clang's vpmaddwd builtin; elsewhere, and with TANDEM_X86_SIMD lowered by the host (env TANDEM_OPENCL_X86), it
// is portable OpenCL C with the same integer results (tests/test_opencl.cpp checks that all levels give the
// same bits). Per block and row the scale is applied once per run:
// (sum(q * x) - 8 * sum(x)) * d_w * d_x, the -8 * sum(x) term from quantize_x_q8.
// Measured on the 2-vCPU Xeon (PoCL 3.1, skylake-avx512 target), 4096 x 4096, M = 1, in `tandem-bench ops`
// alternated with the previous version of this kernel (int16 products in the 16 lanes of a short16, ~5 256-bit
// instructions per 16 weights): from L3 (--cold-mib 0) 0.31-0.33 ms against 0.45-0.46; from DRAM 0.68-0.76 of
// PoCL's read kernel against 0.55-0.62 (11008 x 4096: 0.78-0.90 against 0.70-0.75), five runs of each.
// vpdpwssd (with 8 accumulator chains, its latency being 5 cycles) over vpmaddwd + vpaddd, alternated three times
// in one build (TANDEM_OPENCL_X86=vnni / avx512): 0.76-0.79 against 0.66-0.74 (11008 x 4096: 0.87-0.99 against
// 0.81-0.89); from L3 the fastest runs 0.21 against 0.23-0.25 ms.
// The activations move by up to half a quantization step (the cpu backend's tolerance in the tests), so this is
// not offered on GPUs, which keep the exact f32 kernels of mul_mv_quant.cl.
//
// The g16 layout: rows in groups of 16 (the last padded with zero rows), each row's blocks in runs of 4 (the last
// padded with zero blocks: scale 0). Group g, run i is 1280 bytes at (g * runs + i) * 1280:
//   1024 bytes  16 column pairs p of 16 uint lanes: lane r of pair p holds, in its low and high ushort, elements
//               2p and 2p + 1 of blocks 4i .. 4i + 3 of row 16g + r, block 4i + b's nibble in bits 4b .. 4b + 3
//               of each ushort (as stored: 0..15, the weight is nibble - 8)
//    256 bytes  the f32 scales: block 4i + b of row 16g + r at float index 16b + r
// (f32 scales: PoCL has no hardware half conversion; 20 bytes per 32 weights against GGUF's 18.)
//
// The quantized activations (quantize_x_q8), for each x row m, blocks padded to 4 * runs (zeros past K):
//   q:   int16 per element, row m at q + m * 4 * runs * 32   (the values -127..127; 16 bits so that a pair of
//        them is the 32-bit broadcast operand of vpmaddwd)
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
#ifndef TANDEM_X86_SIMD
#define TANDEM_X86_SIMD 2
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
        for (int c = 0; c < 32; ++c) oq[2 * (16 * (c / 2) + r) + c % 2] = lane[c];
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

// Per 32-bit lane: lo16(w) * lo16(x) + hi16(w) * hi16(x), the 16-bit halves signed (x86's vpmaddwd). The nibble
// pairs of a column pair are 0..15 and the activation pair -127..127, so nothing saturates or overflows.
#if defined(__AVX512BW__) && TANDEM_X86_SIMD >= 2
typedef short g16_short32 __attribute__((ext_vector_type(32)));
inline int16 madd_pairs(const uint16 w, const uint x) {
    return __builtin_ia32_pmaddwd512(__builtin_astype(w, g16_short32), __builtin_astype((uint16)(x), g16_short32));
}
#elif defined(__AVX2__) && TANDEM_X86_SIMD >= 1
typedef short g16_short16 __attribute__((ext_vector_type(16)));
inline int16 madd_pairs(const uint16 w, const uint x) {
    const g16_short16 xs = __builtin_astype((uint8)(x), g16_short16);
    const int8 lo = __builtin_ia32_pmaddwd256(__builtin_astype(w.lo, g16_short16), xs);
    const int8 hi = __builtin_ia32_pmaddwd256(__builtin_astype(w.hi, g16_short16), xs);
    return (int16)(lo, hi);
}
#else
inline int16 madd_pairs(const uint16 w, const uint x) {
    const int16 wl = as_int16(w & (uint16)0xFFFF), wh = as_int16(w >> (uint16)16);
    return wl * (int)(short)(x & 0xFFFF) + wh * ((int)x >> 16);
}
#endif

// acc + madd_pairs(w, x). With TANDEM_X86_SIMD >= 3 (the host saw AVX512-VNNI on the CPU that PoCL compiles for)
// one vpdpwssd does both; the builtin needs the feature on the function that uses it, and PoCL's target name
// (skylake-avx512 on the Xeon) may lack it, so these functions carry it as an attribute (G16_TARGET). Such a
// function cannot be inlined into one without the feature, so the kernel makes one call per work-item into
// g16_rows, which has it, and everything below that inlines.
#if defined(__AVX512BW__) && TANDEM_X86_SIMD >= 3
#define G16_TARGET __attribute__((target("avx512vnni")))
G16_TARGET inline int16 dot_pairs(const int16 acc, const uint16 w, const uint x) {
    return __builtin_ia32_vpdpwssd512(acc, __builtin_astype(w, int16), __builtin_astype((uint16)(x), int16));
}
#else
#define G16_TARGET
inline int16 dot_pairs(const int16 acc, const uint16 w, const uint x) { return acc + madd_pairs(w, x); }
#endif

// Each 16-bit half shifted right by 12 (the column's block-3 nibble): x86's vpsrlw, with no mask to clear what a
// 32-bit shift would carry over from the upper half.
#if defined(__AVX512BW__) && TANDEM_X86_SIMD >= 2
G16_TARGET inline uint16 shr12_halves(const uint16 v) {
    return __builtin_astype(__builtin_ia32_psrlwi512(__builtin_astype(v, g16_short32), 12), uint16);
}
#else
G16_TARGET inline uint16 shr12_halves(const uint16 v) { return (v >> (uint16)12) & (uint16)(0x000F000Fu); }
#endif

// sum over the 32 columns of a run of q[c] * x[c] for its 4 blocks, as int32 per row, added to tot. q: the run's
// 16 column pairs; xr: the run's 4 quantized activation blocks, read as pairs of int16.
// Blocks 1 and 2 are masked in place, not shifted down: their products come out 16 and 256 times too large (the
// nibble times 256 is at most 3840, still a signed 16-bit value; a run's sum at most 256 * 32 * 15 * 127, well
// inside int32) and an exact arithmetic shift per run takes the factor out. 4 instructions unpack a column pair's
// 4 blocks instead of 7.
G16_TARGET inline void g16_run(__global const uint* q, __global const uint* xr, int16* tot) {
    // Two accumulators per block (even and odd pairs): 8 dependency chains, so that vpdpwssd's latency (5 cycles)
    // does not bound the loop.
    int16 e0 = (int16)(0), e1 = (int16)(0), e2 = (int16)(0), e3 = (int16)(0);
    int16 o0 = (int16)(0), o1 = (int16)(0), o2 = (int16)(0), o3 = (int16)(0);
#pragma unroll
    for (int p = 0; p < 16; p += 2) {
        const uint16 v = vload16(p, q), u = vload16(p + 1, q);
        e0 = dot_pairs(e0, v & (uint16)(0x000F000Fu), xr[p]);
        e1 = dot_pairs(e1, v & (uint16)(0x00F000F0u), xr[16 + p]);
        e2 = dot_pairs(e2, v & (uint16)(0x0F000F00u), xr[32 + p]);
        e3 = dot_pairs(e3, shr12_halves(v), xr[48 + p]);
        o0 = dot_pairs(o0, u & (uint16)(0x000F000Fu), xr[p + 1]);
        o1 = dot_pairs(o1, u & (uint16)(0x00F000F0u), xr[17 + p]);
        o2 = dot_pairs(o2, u & (uint16)(0x0F000F00u), xr[33 + p]);
        o3 = dot_pairs(o3, shr12_halves(u), xr[49 + p]);
    }
    tot[0] += e0 + o0;
    tot[1] += (e1 + o1) >> 4;
    tot[2] += (e2 + o2) >> 8;
    tot[3] += e3 + o3;
}

// Rows 16g .. 16g + 15 of out for the MV_ROWS x rows from m0 (rows past M recompute the last one, not stored).
// Each run's 1280 bytes are read from memory for the first x row and from L1 for the others; the nibbles are
// unpacked again per row, which keeps one row's accumulators in registers (an array of them per row put them
// on the stack, a load and a store per multiply-add).
G16_TARGET void g16_rows(__global const uchar* w, ulong w_off, __global const uchar* s, ulong q_off, ulong d_off,
                         ulong sum_off, __global uchar* out, ulong out_off, int N, int M, int runs, int g, int m0) {
    const int nbp = 4 * runs;
    __global const uchar* grp = w + w_off + (size_t)g * runs * G16_RUN_BYTES;
    float16 acc[MV_ROWS];
    for (int r = 0; r < MV_ROWS; ++r) acc[r] = (float16)(0.f);
    // Groups are contiguous, so the prefetch runs on into the next group's first runs (another work-item's, next
    // in line on this thread), up to the end of the weight.
    const size_t total_runs = (size_t)((N + 15) / 16) * runs;
    for (int i = 0; i < runs; ++i) {
        __global const uint* q = (__global const uint*)(grp + (size_t)i * G16_RUN_BYTES);
        __global const float* sc = (__global const float*)(grp + (size_t)i * G16_RUN_BYTES + 1024);
        if ((size_t)g * runs + i + G16_PREFETCH_RUNS < total_runs) {
            __global const uchar* ahead = grp + (size_t)(i + G16_PREFETCH_RUNS) * G16_RUN_BYTES;
            for (int l = 0; l < G16_RUN_BYTES; l += 64) PREFETCH_LINE(ahead + l);
        }
        for (int r = 0; r < MV_ROWS; ++r) {
            const size_t row = (size_t)min(m0 + r, M - 1), b0 = row * nbp + 4 * i;
            __global const uint* xr = (__global const uint*)(CVIEW(short, s, q_off) + b0 * QK);
            __global const float* xd = CVIEW(float, s, d_off) + b0;
            __global const int* xs = CVIEW(int, s, sum_off) + b0;
            int16 tot[4] = {(int16)(xs[0]), (int16)(xs[1]), (int16)(xs[2]), (int16)(xs[3])};
            g16_run(q, xr, tot);
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

__kernel void mul_mv_q4_0_f32_g16(__global const uchar* w, ulong w_off, __global const uchar* s, ulong q_off,
                                  ulong d_off, ulong sum_off, __global uchar* out, ulong out_off, int N, int M,
                                  int runs) {
    const int g = get_global_id(0);
    const int m0 = get_global_id(1) * MV_ROWS;
    if (g * 16 >= N || m0 >= M) return;
    g16_rows(w, w_off, s, q_off, d_off, sum_off, out, out_off, N, M, runs, g, m0);
}
