// Matrix-matrix products with K-quant weights (prefill, tree verification): out[m][n] = sum_k w[n][k] x[m][k],
// w {K, N} Q4_K / Q6_K (K a multiple of 256, super-blocks read in place and decoded by kquant.cl), x f32 {K, M},
// out f32 {N, M}. Every weight chunk (16 weights, kquant.cl) is decoded once per tile of x rows and reused for all
// of them; no dequantized matrix ever exists.
// The GPU variant (mul_mm_<q>_f32_tiled): a work-group computes an MM_TM x MM_TN block of out; per step it stages
// MMK_CHUNKS chunks of one super-block: the matching MMK_CHUNKS * 16 columns of x (gathered: a Q6_K chunk's
// columns are not contiguous with the next chunk's) and the MM_TN rows' chunks decoded to f32 in local memory
// (each work-item decodes whole chunks: one or two 16-byte loads, a widen and an fma), then every work-item
// accumulates its MM_RM x MM_RN outputs from local memory as in kernels/mul_mm.cl. Edges are zero-padded.
// The CPU-device variant (mul_mm_<q>_f32_dot): no local memory or barriers (a work-group is a loop over
// work-items there). Each work-item decodes the chunks of its MMD_RN weight rows into registers (one float16
// each, the 16 chunks of a super-block unrolled) and FMAs them into MMD_RM x MMD_RN 16-lane accumulators, so a
// decoded chunk serves MMD_RM x rows and a loaded x vector MMD_RN weight rows.

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
#ifndef MMK_CHUNKS
#define MMK_CHUNKS 4  // chunks per step of the tiled kernel (a divisor of 16): 64 columns, 16 KiB of local memory
#endif
#define MM_LM (MM_TM / MM_RM)  // work-items along m
#define MM_LN (MM_TN / MM_RN)  // work-items along n
#define MM_THREADS (MM_LM * MM_LN)
#define MMK_COLS (MMK_CHUNKS * 16)

inline void mul_mm_kq(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                      __global uchar* out, ulong out_off, int K, int N, int M, __local float* xs, __local float* ws,
                      const int is_q6) {
    const int tn = get_local_id(0), tm = get_local_id(1);
    const int lid = tm * MM_LN + tn;
    const int n0 = get_group_id(0) * MM_TN, m0 = get_group_id(1) * MM_TM;
    const int nb = K / QK_K, bb = is_q6 ? Q6_K_BYTES : Q4_K_BYTES;
    __global const float* xg = CVIEW(float, x, x_off);
    float acc[MM_RM][MM_RN];
    for (int i = 0; i < MM_RM; ++i)
        for (int j = 0; j < MM_RN; ++j) acc[i][j] = 0.f;

    for (int step = 0; step < nb * (16 / MMK_CHUNKS); ++step) {
        const int blk = step / (16 / MMK_CHUNKS), t0 = step % (16 / MMK_CHUNKS) * MMK_CHUNKS;
        // xs[c][m] = x[m0 + m][column of slot c]; ws[c][n] = w[n0 + n][same column], decoded. Slot c is element
        // c % 16 of chunk t0 + c / 16.
        for (int i = lid; i < MM_TM * MMK_COLS; i += MM_THREADS) {
            const int r = i / MMK_COLS, c = i % MMK_COLS, m = m0 + r;
            const int k = blk * QK_K + kq_chunk_first(t0 + c / 16, is_q6) + c % 16;
            xs[c * MM_TM + r] = m < M ? xg[(size_t)m * K + k] : 0.f;
        }
        for (int i = lid; i < MM_TN * MMK_CHUNKS; i += MM_THREADS) {
            const int r = i / MMK_CHUNKS, ch = i % MMK_CHUNKS, n = n0 + r;
            float v[16];
            vstore16(n < N ? kq_chunk(w + w_off + ((size_t)n * nb + blk) * bb, t0 + ch, is_q6) : (float16)(0.f), 0,
                     v);
            for (int c = 0; c < 16; ++c) ws[(ch * 16 + c) * MM_TN + r] = v[c];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < MMK_COLS; ++kk) {
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
void mul_mm_q4_k_f32_tiled(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                           __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float xs[MMK_COLS * MM_TM];
    __local float ws[MMK_COLS * MM_TN];
    mul_mm_kq(w, w_off, x, x_off, out, out_off, K, N, M, xs, ws, 0);
}

__kernel __attribute__((reqd_work_group_size(MM_LN, MM_LM, 1)))
void mul_mm_q6_k_f32_tiled(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                           __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float xs[MMK_COLS * MM_TM];
    __local float ws[MMK_COLS * MM_TN];
    mul_mm_kq(w, w_off, x, x_off, out, out_off, K, N, M, xs, ws, 1);
}

#ifndef MMD_RM
#define MMD_RM 4
#endif
#ifndef MMD_RN
#define MMD_RN 2
#endif

inline void mul_mm_kq_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                          __global uchar* out, ulong out_off, int K, int N, int M, const int is_q6) {
    const int n0 = get_global_id(0) * MMD_RN, m0 = get_global_id(1) * MMD_RM;
    if (n0 >= N || m0 >= M) return;
    const int nb = K / QK_K, bb = is_q6 ? Q6_K_BYTES : Q4_K_BYTES;
    __global const uchar* wr[MMD_RN];
    __global const float* xr[MMD_RM];
    for (int j = 0; j < MMD_RN; ++j) wr[j] = w + w_off + (size_t)min(n0 + j, N - 1) * nb * bb;  // edge: recompute
    for (int i = 0; i < MMD_RM; ++i) xr[i] = CVIEW(float, x, x_off) + (size_t)min(m0 + i, M - 1) * K;
    float16 acc[MMD_RM][MMD_RN];
    for (int i = 0; i < MMD_RM; ++i)
        for (int j = 0; j < MMD_RN; ++j) acc[i][j] = (float16)(0.f);
    for (int blk = 0; blk < nb; ++blk) {
#pragma unroll
        for (int t = 0; t < 16; ++t) {
            float16 wv[MMD_RN];
            for (int j = 0; j < MMD_RN; ++j) wv[j] = kq_chunk(wr[j] + (size_t)blk * bb, t, is_q6);
            const int k = blk * QK_K + kq_chunk_first(t, is_q6);
            for (int i = 0; i < MMD_RM; ++i) {
                const float16 xv = vload16(0, xr[i] + k);
                for (int j = 0; j < MMD_RN; ++j) acc[i][j] = fma(xv, wv[j], acc[i][j]);
            }
        }
    }
    __global float* o = VIEW(float, out, out_off);
    for (int i = 0; i < MMD_RM; ++i)
        for (int j = 0; j < MMD_RN; ++j)
            if (m0 + i < M && n0 + j < N) o[(size_t)(m0 + i) * N + n0 + j] = hsum16(acc[i][j]);
}

__kernel void mul_mm_q4_k_f32_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mm_kq_dot(w, w_off, x, x_off, out, out_off, K, N, M, 0);
}

__kernel void mul_mm_q6_k_f32_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mm_kq_dot(w, w_off, x, x_off, out, out_off, K, N, M, 1);
}
