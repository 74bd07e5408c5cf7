// Matrix-vector products with quantized weights (decode, small batches): out[m][n] = sum_k w[n][k] * x[m][k]
// with w {K, N} Q8_0 / Q4_0 (K a multiple of 32; blocks read in place, decoders in common.cl), x f32 {K, M},
// out f32 {N, M}. Each weight row is read once per MV_ROWS x rows.
// Inner loop: one 32-weight block per step. Its quants come in as one or two 16-byte vector loads, are
// widened to two float16 and multiplied by the block scale (exact), then FMA'd into 16-lane accumulators for
// every x row of the pass; the 16 lanes are summed once per row at the end. The decode is paid once per
// block and shared by the MV_ROWS x rows; the weight stream (34 or 18 bytes per 32 weights) is the bound.
//   *_row: one output row n per work-item. Best where a work-group is a loop over work-items (PoCL and other
//          CPU devices: consecutive blocks of one row stream through one core's cache lines).
//   *_wg:  one work-group of WGS work-items per output row, each taking every WGS-th block, then a
//          local-memory reduction (GPUs: neighbouring work-items read neighbouring blocks).

#ifndef MV_ROWS
#define MV_ROWS 4
#endif
#ifndef WGS
#define WGS 64
#endif

inline void mul_mv_q_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                         __global uchar* out, ulong out_off, int K, int N, int M, const int is_q4) {
    const int n = get_global_id(0);
    const int m0 = get_global_id(1) * MV_ROWS;
    if (n >= N || m0 >= M) return;
    const int nb = K / QK, bb = is_q4 ? Q4_0_BYTES : Q8_0_BYTES;
    __global const uchar* wr = w + w_off + (size_t)n * nb * bb;
    __global const float* xr[MV_ROWS];
    float16 acc[MV_ROWS];
    for (int r = 0; r < MV_ROWS; ++r) {
        xr[r] = CVIEW(float, x, x_off) + (size_t)min(m0 + r, M - 1) * K;  // rows past M recompute the last one
        acc[r] = (float16)(0.f);
    }
    for (int i = 0; i < nb; ++i) {
        float16 lo, hi;
        dequant_block(wr + (size_t)i * bb, &lo, &hi, is_q4);
        for (int r = 0; r < MV_ROWS; ++r) {
            acc[r] = fma(lo, vload16(2 * i, xr[r]), acc[r]);
            acc[r] = fma(hi, vload16(2 * i + 1, xr[r]), acc[r]);
        }
    }
    for (int r = 0; r < MV_ROWS; ++r)
        if (m0 + r < M) VIEW(float, out, out_off)[(size_t)(m0 + r) * N + n] = hsum16(acc[r]);
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
        float16 lo, hi;
        dequant_block(wr + (size_t)i * bb, &lo, &hi, is_q4);
        for (int r = 0; r < MV_ROWS; ++r) {
            acc[r] = fma(lo, vload16(2 * i, xr[r]), acc[r]);
            acc[r] = fma(hi, vload16(2 * i + 1, xr[r]), acc[r]);
        }
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
    mul_mv_q_row(w, w_off, x, x_off, out, out_off, K, N, M, 0);
}

__kernel void mul_mv_q4_0_f32_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mv_q_row(w, w_off, x, x_off, out, out_off, K, N, M, 1);
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
