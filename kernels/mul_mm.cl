// Matrix-matrix products for many x rows (prefill, tree verification): out[m][n] = sum_k w[n][k] x[m][k],
// w {K, N} f32/f16, x f32 {K, M}, out f32 {N, M}. Two variants, chosen by device class.
// The GPU variant (mul_mm_*_f32_tiled): a work-group computes an MM_TM x MM_TN block of out from
// MM_TK-deep tiles of x and w staged in local memory (f16 converted to f32 on the way in); each work-item
// owns MM_RM x MM_RN outputs in registers, strided by the group's extent so that neighbouring work-items
// touch neighbouring addresses. Edges are zero-padded on load and masked on store.

#ifndef MM_TM
#define MM_TM 32
#endif
#ifndef MM_TN
#define MM_TN 32
#endif
#ifndef MM_TK
#define MM_TK 16
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

inline void mul_mm(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off, __global uchar* out,
                   ulong out_off, int K, int N, int M, __local float* xs, __local float* ws, const int is_f16) {
    const int tn = get_local_id(0), tm = get_local_id(1);
    const int lid = tm * MM_LN + tn;
    const int n0 = get_group_id(0) * MM_TN, m0 = get_group_id(1) * MM_TM;
    const size_t w_row_bytes = (size_t)K * (is_f16 ? 2 : 4);
    __global const float* xg = CVIEW(float, x, x_off);
    float acc[MM_RM][MM_RN];
    for (int i = 0; i < MM_RM; ++i)
        for (int j = 0; j < MM_RN; ++j) acc[i][j] = 0.f;

    for (int k0 = 0; k0 < K; k0 += MM_TK) {
        // Stage x[m0 .. m0+TM)[k0 .. k0+TK) and w[n0 .. n0+TN)[k0 .. k0+TK) transposed: xs[k][m], ws[k][n].
        for (int i = lid; i < MM_TM * MM_TK; i += MM_THREADS) {
            const int r = i / MM_TK, c = i % MM_TK;
            const int m = m0 + r, k = k0 + c;
            xs[c * MM_TM + r] = (m < M && k < K) ? xg[(size_t)m * K + k] : 0.f;
        }
        for (int i = lid; i < MM_TN * MM_TK; i += MM_THREADS) {
            const int r = i / MM_TK, c = i % MM_TK;
            const int n = n0 + r, k = k0 + c;
            ws[c * MM_TN + r] = (n < N && k < K) ? load1(w + w_off + (size_t)n * w_row_bytes, k, is_f16) : 0.f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < MM_TK; ++kk) {
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
void mul_mm_f32_f32_tiled(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                          __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float xs[MM_TK * MM_TM];
    __local float ws[MM_TK * MM_TN];
    mul_mm(w, w_off, x, x_off, out, out_off, K, N, M, xs, ws, 0);
}

__kernel __attribute__((reqd_work_group_size(MM_LN, MM_LM, 1)))
void mul_mm_f16_f32_tiled(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                          __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float xs[MM_TK * MM_TM];
    __local float ws[MM_TK * MM_TN];
    mul_mm(w, w_off, x, x_off, out, out_off, K, N, M, xs, ws, 1);
}

// The CPU-device variant ("dot"): no local memory or barriers (a work-group is a loop over work-items there,
// and staging through "local" memory is a plain copy). Each work-item computes an MMD_RM x MMD_RN block of out
// as 8-wide dot products along k, so every loaded vector of x is used MMD_RN times and every vector of w
// MMD_RM times; neighbouring work-items share x rows (dimension 0 runs over n), which stay in cache.
#ifndef MMD_RM
#define MMD_RM 4
#endif
#ifndef MMD_RN
#define MMD_RN 2
#endif

inline void mul_mm_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                       __global uchar* out, ulong out_off, int K, int N, int M, const int is_f16) {
    const int n0 = get_global_id(0) * MMD_RN, m0 = get_global_id(1) * MMD_RM;
    if (n0 >= N || m0 >= M) return;
    const size_t w_row_bytes = (size_t)K * (is_f16 ? 2 : 4);
    __global const uchar* wr[MMD_RN];
    __global const float* xr[MMD_RM];
    for (int j = 0; j < MMD_RN; ++j) wr[j] = w + w_off + (size_t)min(n0 + j, N - 1) * w_row_bytes;  // edge: recompute
    for (int i = 0; i < MMD_RM; ++i) xr[i] = CVIEW(float, x, x_off) + (size_t)min(m0 + i, M - 1) * K;
    float8 acc[MMD_RM][MMD_RN];
    for (int i = 0; i < MMD_RM; ++i)
        for (int j = 0; j < MMD_RN; ++j) acc[i][j] = (float8)(0.f);
    const int k8 = K / 8;
    for (int kk = 0; kk < k8; ++kk) {
        float8 wv[MMD_RN];
        for (int j = 0; j < MMD_RN; ++j) wv[j] = load8(wr[j], kk, is_f16);
        for (int i = 0; i < MMD_RM; ++i) {
            const float8 xv = vload8(kk, xr[i]);
            for (int j = 0; j < MMD_RN; ++j) acc[i][j] = fma(xv, wv[j], acc[i][j]);
        }
    }
    __global float* o = VIEW(float, out, out_off);
    for (int i = 0; i < MMD_RM; ++i) {
        for (int j = 0; j < MMD_RN; ++j) {
            float sum = hsum8(acc[i][j]);
            for (int k = k8 * 8; k < K; ++k) sum = fma(xr[i][k], load1(wr[j], k, is_f16), sum);
            if (m0 + i < M && n0 + j < N) o[(size_t)(m0 + i) * N + n0 + j] = sum;
        }
    }
}

__kernel void mul_mm_f32_f32_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                 __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mm_dot(w, w_off, x, x_off, out, out_off, K, N, M, 0);
}

__kernel void mul_mm_f16_f32_dot(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                 __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mm_dot(w, w_off, x, x_off, out, out_off, K, N, M, 1);
}
