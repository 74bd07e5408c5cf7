// The two backward passes of matmul (backends/backend.h, training section). The program cache prepends kquant.cl
// (K-quant decoding) after common.cl (Q8_0 / Q4_0 decoding), so every weight type reads its packed blocks in place:
// no dequantized copy of W ever exists.
//   matmul_t_<w>_f32:  dx[m][k] = sum_n w[n][k] * dy[m][n]; w {K, N}, dy f32 {N, M}, dx f32 {K, M}.
//     One work-item per (column block, MT_ROWS rows of m), looping over the N weight rows. A column block is what
//     one decode yields: 32 elements of an f32/f16 row (the last block of a row may be shorter), one 32-weight block
//     of Q8_0 / Q4_0, one 16-weight chunk of a Q4_K / Q6_K super-block (kquant.cl). The decode of each block is
//     shared by the MT_ROWS rows of dy. Chosen over a transposed GEMM because it needs no transposed or dequantized
//     weight copy and is "one output tile per work-item", which PoCL runs best; a GPU would want the dy rows of a
//     work-group staged in local memory (not done: no GPU here to tune it on).
//   weight_grad_f32:   dw[n][k] = beta * dw[n][k] + alpha * sum_m dy[m][n] * x[m][k]; dy {N, M}, x {K, M}, dw {K, N}.
//     One work-item per (8 columns k, WG_TN rows n), looping over m in increasing order: each step loads one float8
//     of x and WG_TN dy values for 8 * WG_TN multiply-adds. beta == 0 never reads dw (its old contents may be NaN).
//     The loop over m is the reduction, so there are no atomics and the order is fixed. A GPU variant would stage
//     tiles of x and dy through local memory.

#ifndef MT_ROWS
#define MT_ROWS 4
#endif
#ifndef WG_TN
#define WG_TN 4
#endif

// ---- matmul_t ----

// Row pointers of dy and dx for rows m0 .. m0 + MT_ROWS - 1 (rows past M recompute the last one, never written).
#define MT_ROW_SETUP                                                                   \
    __global const float* dyr[MT_ROWS];                                                \
    for (int r = 0; r < MT_ROWS; ++r) dyr[r] = CVIEW(float, dy, dy_off) + (size_t)min(m0 + r, M - 1) * N;

// f32 / f16 weights: block kb covers columns 32kb .. min(32kb + 32, K) - 1, as two float16 lanes like a Q8_0 block
// (8 columns per work-item left the loop bound by the dy loads). Full blocks and the short last block of a row take
// separate loops (a version with the branch inside the loop and float8[4] accumulators ran 4x slower on PoCL).
inline void matmul_t_float(__global const uchar* w, ulong w_off, __global const uchar* dy, ulong dy_off,
                           __global uchar* dx, ulong dx_off, int K, int N, int M, const int is_f16) {
    const int kb = get_global_id(0), m0 = get_global_id(1) * MT_ROWS;
    const int k0 = 32 * kb;
    if (k0 >= K || m0 >= M) return;
    MT_ROW_SETUP
    const size_t row_bytes = (size_t)K * (is_f16 ? 2 : 4);
    __global const uchar* wb = w + w_off;
    const int nk = min(32, K - k0);
    float16 lo_acc[MT_ROWS], hi_acc[MT_ROWS];
    for (int r = 0; r < MT_ROWS; ++r) lo_acc[r] = hi_acc[r] = (float16)(0.f);
    if (nk == 32) {
        for (int n = 0; n < N; ++n) {
            __global const uchar* wr = wb + (size_t)n * row_bytes;
            const float16 lo = (float16)(load8(wr, 4 * kb, is_f16), load8(wr, 4 * kb + 1, is_f16));
            const float16 hi = (float16)(load8(wr, 4 * kb + 2, is_f16), load8(wr, 4 * kb + 3, is_f16));
            for (int r = 0; r < MT_ROWS; ++r) {
                const float16 d = (float16)(dyr[r][n]);
                lo_acc[r] = fma(d, lo, lo_acc[r]);
                hi_acc[r] = fma(d, hi, hi_acc[r]);
            }
        }
    } else {  // element by element, zeros past K
        for (int n = 0; n < N; ++n) {
            __global const uchar* wr = wb + (size_t)n * row_bytes;
            float t[32];
            for (int j = 0; j < 32; ++j) t[j] = j < nk ? load1(wr, k0 + j, is_f16) : 0.f;
            const float16 lo = vload16(0, t), hi = vload16(1, t);
            for (int r = 0; r < MT_ROWS; ++r) {
                const float16 d = (float16)(dyr[r][n]);
                lo_acc[r] = fma(d, lo, lo_acc[r]);
                hi_acc[r] = fma(d, hi, hi_acc[r]);
            }
        }
    }
    for (int r = 0; r < MT_ROWS && m0 + r < M; ++r) {
        __global float* o = VIEW(float, dx, dx_off) + (size_t)(m0 + r) * K + k0;
        if (nk == 32) {
            vstore16(lo_acc[r], 0, o);
            vstore16(hi_acc[r], 1, o);
        } else {
            float t[32];
            vstore16(lo_acc[r], 0, t);
            vstore16(hi_acc[r], 1, t);
            for (int j = 0; j < nk; ++j) o[j] = t[j];
        }
    }
}

// Q8_0 / Q4_0 weights: block kb is weight block kb of every row (columns 32kb .. 32kb + 31).
inline void matmul_t_q(__global const uchar* w, ulong w_off, __global const uchar* dy, ulong dy_off,
                       __global uchar* dx, ulong dx_off, int K, int N, int M, const int is_q4) {
    const int kb = get_global_id(0), m0 = get_global_id(1) * MT_ROWS;
    const int nb = K / QK, bb = is_q4 ? Q4_0_BYTES : Q8_0_BYTES;
    if (kb >= nb || m0 >= M) return;
    MT_ROW_SETUP
    __global const uchar* wb = w + w_off + (size_t)kb * bb;
    const size_t row_bytes = (size_t)nb * bb;
    float16 lo_acc[MT_ROWS], hi_acc[MT_ROWS];
    for (int r = 0; r < MT_ROWS; ++r) lo_acc[r] = hi_acc[r] = (float16)(0.f);
    for (int n = 0; n < N; ++n) {
        float16 lo, hi;
        dequant_block(wb + (size_t)n * row_bytes, &lo, &hi, is_q4);
        for (int r = 0; r < MT_ROWS; ++r) {
            const float16 d = (float16)(dyr[r][n]);
            lo_acc[r] = fma(d, lo, lo_acc[r]);
            hi_acc[r] = fma(d, hi, hi_acc[r]);
        }
    }
    for (int r = 0; r < MT_ROWS && m0 + r < M; ++r) {
        __global float* o = VIEW(float, dx, dx_off) + (size_t)(m0 + r) * K + (size_t)kb * QK;
        vstore16(lo_acc[r], 0, o);
        vstore16(hi_acc[r], 1, o);
    }
}

// Q4_K / Q6_K weights: block c is chunk t = c % 16 of super-block c / 16 of every row (16 columns, kquant.cl).
inline void matmul_t_kq(__global const uchar* w, ulong w_off, __global const uchar* dy, ulong dy_off,
                        __global uchar* dx, ulong dx_off, int K, int N, int M, const int is_q6) {
    const int c = get_global_id(0), m0 = get_global_id(1) * MT_ROWS;
    const int nsb = K / QK_K, bb = is_q6 ? Q6_K_BYTES : Q4_K_BYTES;
    if (c >= nsb * 16 || m0 >= M) return;
    MT_ROW_SETUP
    const int sb = c >> 4, t = c & 15;
    __global const uchar* wb = w + w_off + (size_t)sb * bb;
    const size_t row_bytes = (size_t)nsb * bb;
    float16 acc[MT_ROWS];
    for (int r = 0; r < MT_ROWS; ++r) acc[r] = (float16)(0.f);
    for (int n = 0; n < N; ++n) {
        const float16 wv = kq_chunk(wb + (size_t)n * row_bytes, t, is_q6);
        for (int r = 0; r < MT_ROWS; ++r) acc[r] = fma((float16)(dyr[r][n]), wv, acc[r]);
    }
    const size_t k0 = (size_t)sb * QK_K + kq_chunk_first(t, is_q6);
    for (int r = 0; r < MT_ROWS && m0 + r < M; ++r)
        vstore16(acc[r], 0, VIEW(float, dx, dx_off) + (size_t)(m0 + r) * K + k0);
}

#define MATMUL_T_ARGS                                                                                            \
    __global const uchar *w, ulong w_off, __global const uchar *dy, ulong dy_off, __global uchar *dx, ulong dx_off, \
        int K, int N, int M

__kernel void matmul_t_f32_f32(MATMUL_T_ARGS) { matmul_t_float(w, w_off, dy, dy_off, dx, dx_off, K, N, M, 0); }
__kernel void matmul_t_f16_f32(MATMUL_T_ARGS) { matmul_t_float(w, w_off, dy, dy_off, dx, dx_off, K, N, M, 1); }
__kernel void matmul_t_q8_0_f32(MATMUL_T_ARGS) { matmul_t_q(w, w_off, dy, dy_off, dx, dx_off, K, N, M, 0); }
__kernel void matmul_t_q4_0_f32(MATMUL_T_ARGS) { matmul_t_q(w, w_off, dy, dy_off, dx, dx_off, K, N, M, 1); }
__kernel void matmul_t_q4_k_f32(MATMUL_T_ARGS) { matmul_t_kq(w, w_off, dy, dy_off, dx, dx_off, K, N, M, 0); }
__kernel void matmul_t_q6_k_f32(MATMUL_T_ARGS) { matmul_t_kq(w, w_off, dy, dy_off, dx, dx_off, K, N, M, 1); }

// ---- weight_grad ----

__kernel void weight_grad_f32(__global const uchar* dy, ulong dy_off, __global const uchar* x, ulong x_off,
                              __global uchar* dw, ulong dw_off, int K, int N, int M, float alpha, float beta) {
    const int k0 = get_global_id(0) * 8, n0 = get_global_id(1) * WG_TN;
    if (k0 >= K || n0 >= N) return;
    const int nk = min(8, K - k0);
    __global const float* dyb = CVIEW(float, dy, dy_off);
    __global const float* xb = CVIEW(float, x, x_off) + k0;
    int nr[WG_TN];
    float8 acc[WG_TN];
    for (int r = 0; r < WG_TN; ++r) {
        nr[r] = min(n0 + r, N - 1);  // rows past N recompute the last one, never written
        acc[r] = (float8)(0.f);
    }
    for (int m = 0; m < M; ++m) {
        __global const float* xr = xb + (size_t)m * K;
        float8 xv;
        if (nk == 8) {
            xv = vload8(0, xr);
        } else {  // the short last columns of a row: zeros past K
            float t[8];
            for (int j = 0; j < 8; ++j) t[j] = j < nk ? xr[j] : 0.f;
            xv = vload8(0, t);
        }
        __global const float* dyr = dyb + (size_t)m * N;
        for (int r = 0; r < WG_TN; ++r) acc[r] = fma((float8)(dyr[nr[r]]), xv, acc[r]);
    }
    for (int r = 0; r < WG_TN && n0 + r < N; ++r) {
        __global float* o = VIEW(float, dw, dw_off) + (size_t)(n0 + r) * K + k0;
        float t[8];
        vstore8(acc[r], 0, t);
        for (int j = 0; j < nk; ++j) o[j] = beta != 0.f ? beta * o[j] + alpha * t[j] : alpha * t[j];
    }
}
