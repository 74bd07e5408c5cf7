// Matrix-matrix products with quantized weights (prefill, tree verification): out[m][n] = sum_k w[n][k] x[m][k],
// w {K, N} Q8_0 / Q4_0 (K a multiple of 32, blocks read in place), x f32 {K, M}, out f32 {N, M}. Every weight
// block is decoded once per tile of x rows and reused for all of them; no dequantized matrix ever exists.
// The GPU variant (mul_mm_<q>_f32_tiled): a work-group computes an MM_TM x MM_TN block of out; per step along k
// it stages one 32-wide slice of x and the MM_TN weight blocks of that slice, decoded to f32 in local memory
// (each work-item decodes half blocks: one 16-byte load, a widen and a scale), then every work-item
// accumulates its MM_RM x MM_RN outputs from local memory as in kernels/mul_mm.cl. Edges are zero-padded.
// The CPU-device variant (mul_mm_<q>_f32_dot): no local memory or barriers (a work-group is a loop over
// work-items there). Each work-item decodes the blocks of its MMD_RN weight rows into registers (two float16
// each) and FMAs them into MMD_RM x MMD_RN 16-lane accumulators, so a decoded block serves MMD_RM x rows and
// a loaded x vector MMD_RN weight rows.

#ifndef MM_TM
#define MM_TM 32
#endif
#ifndef MM_TN
#define MM_TN 32
#endif
#ifndef MM_RM
#define MM_RM 4
#endif
#ifndef MM_RN
#define MM_RN 4
#endif
#define MM_LM (MM_TM / MM_RM)  // work-items along m
#define MM_LN (MM_TN / MM_RN)  // work-items along n
#define MM_THREADS (MM_LM * MM_LN)

inline void mul_mm_q(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                     __global uchar* out, ulong out_off, int K, int N, int M, __local float* xs, __local float* ws,
                     const int is_q4) {
    const int tn = get_local_id(0), tm = get_local_id(1);
    const int lid = tm * MM_LN + tn;
    const int n0 = get_group_id(0) * MM_TN, m0 = get_group_id(1) * MM_TM;
    const int nb = K / QK, bb = is_q4 ? Q4_0_BYTES : Q8_0_BYTES;
    __global const float* xg = CVIEW(float, x, x_off);
    float acc[MM_RM][MM_RN];
    for (int i = 0; i < MM_RM; ++i)
        for (int j = 0; j < MM_RN; ++j) acc[i][j] = 0.f;

    for (int blk = 0; blk < nb; ++blk) {
        const int k0 = blk * QK;
        // xs[k][m] = x[m0 + m][k0 + k]; ws[k][n] = w[n0 + n][k0 + k], decoded.
        for (int i = lid; i < MM_TM * QK; i += MM_THREADS) {
            const int r = i / QK, c = i % QK, m = m0 + r;
            xs[c * MM_TM + r] = m < M ? xg[(size_t)m * K + k0 + c] : 0.f;
        }
        for (int i = lid; i < MM_TN * 2; i += MM_THREADS) {
            const int r = i / 2, h = i % 2, n = n0 + r;
            float v[16];
            vstore16(n < N ? dequant_half(w + w_off + ((size_t)n * nb + blk) * bb, h, is_q4) : (float16)(0.f), 0, v);
            for (int c = 0; c < 16; ++c) ws[(h * 16 + c) * MM_TN + r] = v[c];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < QK; ++kk) {
            float a[MM_RM], b[MM_RN];
            for (int i = 0; i < MM_RM; ++i) a[i] = xs[kk * MM_TM + tm + i * MM_LM];
            for (int j = 0; j < MM_RN; ++j) b[j] = ws[kk * MM_TN + tn + j * MM_LN];
            for (int i = 0; i < MM_RM; ++i)
                for (int j = 0; j < MM_RN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    __global float* o = VIEW(float, out, out_off);
    for (int i = 0; i < MM_RM; ++i) {
        const int m = m0 + tm + i * MM_LM;
        if (m >= M) continue;
        for (int j = 0; j < MM_RN; ++j) {
            const int n = n0 + tn + j * MM_LN;
            if (n < N) o[(size_t)m * N + n] = acc[i][j];
        }
    }
}

__kernel __attribute__((reqd_work_group_size(MM_LN, MM_LM, 1)))
void mul_mm_q8_0_f32_tiled(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                           __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float xs[QK * MM_TM];
    __local float ws[QK * MM_TN];
    mul_mm_q(w, w_off, x, x_off, out, out_off, K, N, M, xs, ws, 0);
}

__kernel __attribute__((reqd_work_group_size(MM_LN, MM_LM, 1)))
void mul_mm_q4_0_f32_tiled(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                           __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float xs[QK * MM_TM];
    __local float ws[QK * MM_TN];
    mul_mm_q(w, w_off, x, x_off, out, out_off, K, N, M, xs, ws, 1);
}

#ifndef MMD_RM
#define MMD_RM 4
#endif
#ifndef MMD_RN
#define MMD_RN 2
#endif

inline void mul_mm_q_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                         __global uchar* out, ulong out_off, int K, int N, int M, const int is_q4) {
    const int n0 = get_global_id(0) * MMD_RN, m0 = get_global_id(1) * MMD_RM;
    if (n0 >= N || m0 >= M) return;
    const int nb = K / QK, bb = is_q4 ? Q4_0_BYTES : Q8_0_BYTES;
    __global const uchar* wr[MMD_RN];
    __global const float* xr[MMD_RM];
    for (int j = 0; j < MMD_RN; ++j) wr[j] = w + w_off + (size_t)min(n0 + j, N - 1) * nb * bb;  // edge: recompute
    for (int i = 0; i < MMD_RM; ++i) xr[i] = CVIEW(float, x, x_off) + (size_t)min(m0 + i, M - 1) * K;
    float16 acc[MMD_RM][MMD_RN];
    for (int i = 0; i < MMD_RM; ++i)
        for (int j = 0; j < MMD_RN; ++j) acc[i][j] = (float16)(0.f);
    for (int blk = 0; blk < nb; ++blk) {
        float16 lo[MMD_RN], hi[MMD_RN];
        for (int j = 0; j < MMD_RN; ++j) dequant_block(wr[j] + (size_t)blk * bb, &lo[j], &hi[j], is_q4);
        for (int i = 0; i < MMD_RM; ++i) {
            const float16 xl = vload16(2 * blk, xr[i]), xh = vload16(2 * blk + 1, xr[i]);
            for (int j = 0; j < MMD_RN; ++j) acc[i][j] = fma(xh, hi[j], fma(xl, lo[j], acc[i][j]));
        }
    }
    __global float* o = VIEW(float, out, out_off);
    for (int i = 0; i < MMD_RM; ++i)
        for (int j = 0; j < MMD_RN; ++j)
            if (m0 + i < M && n0 + j < N) o[(size_t)(m0 + i) * N + n0 + j] = hsum16(acc[i][j]);
}

__kernel void mul_mm_q8_0_f32_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mm_q_dot(w, w_off, x, x_off, out, out_off, K, N, M, 0);
}

__kernel void mul_mm_q4_0_f32_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mm_q_dot(w, w_off, x, x_off, out, out_off, K, N, M, 1);
}
