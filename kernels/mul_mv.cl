// Matrix-vector products for few x rows (decode, small batches): out[m][n] = sum_k w[n][k] * x[m][k] with
// w {K, N} f32/f16, x f32 {K, M}, out f32 {N, M}. Each weight row is read once per MV_ROWS x rows.
//   *_row: one output row n per work-item, 8-wide loads. Best where a work-group is a loop over work-items
//          (PoCL and other CPU devices: it streams the weights at memory bandwidth).
//   *_wg:  one work-group of WGS work-items per output row, then a local-memory reduction (GPUs).

#ifndef MV_ROWS
#define MV_ROWS 4
#endif
#ifndef WGS
#define WGS 64
#endif

inline void mul_mv_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                       __global uchar* out, ulong out_off, int K, int N, int M, const int is_f16) {
    const int n = get_global_id(0);
    const int m0 = get_global_id(1) * MV_ROWS;
    if (n >= N || m0 >= M) return;
    __global const uchar* wr = w + w_off + (size_t)n * K * (is_f16 ? 2 : 4);
    __global const float* xr[MV_ROWS];
    float8 acc[MV_ROWS];
    for (int r = 0; r < MV_ROWS; ++r) {
        xr[r] = CVIEW(float, x, x_off) + (size_t)min(m0 + r, M - 1) * K;  // rows past M recompute the last one
        acc[r] = (float8)(0.f);
    }
    const int k8 = K / 8;
    for (int i = 0; i < k8; ++i) {
        const float8 wv = load8(wr, i, is_f16);
        for (int r = 0; r < MV_ROWS; ++r) acc[r] = fma(wv, vload8(i, xr[r]), acc[r]);
    }
    for (int r = 0; r < MV_ROWS; ++r) {
        float sum = hsum8(acc[r]);
        for (int k = k8 * 8; k < K; ++k) sum = fma(load1(wr, k, is_f16), xr[r][k], sum);
        if (m0 + r < M) VIEW(float, out, out_off)[(size_t)(m0 + r) * N + n] = sum;
    }
}

inline void mul_mv_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                      __global uchar* out, ulong out_off, int K, int N, int M, __local float* part,
                      const int is_f16) {
    const int n = get_group_id(0), lid = get_local_id(0);
    const int m0 = get_group_id(1) * MV_ROWS;
    __global const uchar* wr = w + w_off + (size_t)n * K * (is_f16 ? 2 : 4);
    __global const float* xr[MV_ROWS];
    float8 acc[MV_ROWS];
    for (int r = 0; r < MV_ROWS; ++r) {
        xr[r] = CVIEW(float, x, x_off) + (size_t)min(m0 + r, M - 1) * K;
        acc[r] = (float8)(0.f);
    }
    const int k8 = K / 8;
    for (int i = lid; i < k8; i += WGS) {
        const float8 wv = load8(wr, i, is_f16);
        for (int r = 0; r < MV_ROWS; ++r) acc[r] = fma(wv, vload8(i, xr[r]), acc[r]);
    }
    for (int r = 0; r < MV_ROWS; ++r) {
        float sum = hsum8(acc[r]);
        for (int k = k8 * 8 + lid; k < K; k += WGS) sum = fma(load1(wr, k, is_f16), xr[r][k], sum);
        part[r * WGS + lid] = sum;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s)
            for (int r = 0; r < MV_ROWS; ++r) part[r * WGS + lid] += part[r * WGS + lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid < MV_ROWS && m0 + lid < M) VIEW(float, out, out_off)[(size_t)(m0 + lid) * N + n] = part[lid * WGS];
}

__kernel void mul_mv_f32_f32_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                 __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mv_row(w, w_off, x, x_off, out, out_off, K, N, M, 0);
}

__kernel void mul_mv_f16_f32_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                 __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mv_row(w, w_off, x, x_off, out, out_off, K, N, M, 1);
}

__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void mul_mv_f32_f32_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                       __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float part[MV_ROWS * WGS];
    mul_mv_wg(w, w_off, x, x_off, out, out_off, K, N, M, part, 0);
}

__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void mul_mv_f16_f32_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                       __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float part[MV_ROWS * WGS];
    mul_mv_wg(w, w_off, x, x_off, out, out_off, K, N, M, part, 1);
}
