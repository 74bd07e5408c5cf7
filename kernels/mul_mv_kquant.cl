// Matrix-vector products with K-quant weights (decode, small batches): out[m][n] = sum_k w[n][k] * x[m][k] with
// w {K, N} Q4_K / Q6_K (K a multiple of 256; super-blocks read in place, decoded by kquant.cl), x f32 {K, M},
// out f32 {N, M}. Each weight row is read once per MV_ROWS x rows.
// Inner loop: one 16-weight chunk per step (kquant.cl numbers them t = 0..15 per super-block). Its quants come in
// as one 16-byte vector load (two for Q6_K: low nibbles and high bits), are widened to a float16 and turned into
// weights by one fma (Q4_K: scale and offset) or multiply (Q6_K); then one fma per x row into a 16-lane accumulator,
// summed once per row at the end. Decoding to f32 weights rather than multiplying raw quants and applying the
// scale per sub-block costs the same for one x row and less for several: the decode is paid once per chunk and
// shared by the MV_ROWS x rows. Per weight the stream is 4.5 (Q4_K) or 6.56 (Q6_K) bits.
//   *_row: one output row n per work-item, its 16 chunks per super-block unrolled (so the scale bytes and the
//          loads of bytes shared by two chunks fold into one). Best where a work-group is a loop over
//          work-items (PoCL and other CPU devices: a row's super-blocks stream through one core's cache lines).
//   *_wg:  one work-group of WGS work-items per output row, each taking every WGS-th chunk of the row, then a
//          local-memory reduction (GPUs: neighbouring work-items read neighbouring 16-byte chunks; a 4096-wide
//          row has 256 chunks, enough for 64-wide groups, whereas whole super-blocks would be only 16).

#ifndef MV_ROWS
#define MV_ROWS 4
#endif
#ifndef WGS
#define WGS 64
#endif

inline void mul_mv_kq_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                          __global uchar* out, ulong out_off, int K, int N, int M, const int is_q6) {
    const int n = get_global_id(0);
    const int m0 = get_global_id(1) * MV_ROWS;
    if (n >= N || m0 >= M) return;
    const int nb = K / QK_K, bb = is_q6 ? Q6_K_BYTES : Q4_K_BYTES;
    __global const uchar* wr = w + w_off + (size_t)n * nb * bb;
    __global const float* xr[MV_ROWS];
    float16 acc[MV_ROWS];
    for (int r = 0; r < MV_ROWS; ++r) {
        xr[r] = CVIEW(float, x, x_off) + (size_t)min(m0 + r, M - 1) * K;  // rows past M recompute the last one
        acc[r] = (float16)(0.f);
    }
    for (int i = 0; i < nb; ++i) {
        __global const uchar* b = wr + (size_t)i * bb;
#pragma unroll
        for (int t = 0; t < 16; ++t) {
            const float16 wv = kq_chunk(b, t, is_q6);
            const int k = i * QK_K + kq_chunk_first(t, is_q6);
            for (int r = 0; r < MV_ROWS; ++r) acc[r] = fma(wv, vload16(0, xr[r] + k), acc[r]);
        }
    }
    for (int r = 0; r < MV_ROWS; ++r)
        if (m0 + r < M) VIEW(float, out, out_off)[(size_t)(m0 + r) * N + n] = hsum16(acc[r]);
}

inline void mul_mv_kq_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                         __global uchar* out, ulong out_off, int K, int N, int M, __local float* part,
                         const int is_q6) {
    const int n = get_group_id(0), lid = get_local_id(0);
    const int m0 = get_group_id(1) * MV_ROWS;
    const int nb = K / QK_K, bb = is_q6 ? Q6_K_BYTES : Q4_K_BYTES;
    __global const uchar* wr = w + w_off + (size_t)n * nb * bb;
    __global const float* xr[MV_ROWS];
    float16 acc[MV_ROWS];
    for (int r = 0; r < MV_ROWS; ++r) {
        xr[r] = CVIEW(float, x, x_off) + (size_t)min(m0 + r, M - 1) * K;
        acc[r] = (float16)(0.f);
    }
    for (int c = lid; c < nb * 16; c += WGS) {
        const int i = c >> 4, t = c & 15;
        const float16 wv = kq_chunk(wr + (size_t)i * bb, t, is_q6);
        const int k = i * QK_K + kq_chunk_first(t, is_q6);
        for (int r = 0; r < MV_ROWS; ++r) acc[r] = fma(wv, vload16(0, xr[r] + k), acc[r]);
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

__kernel void mul_mv_q4_k_f32_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mv_kq_row(w, w_off, x, x_off, out, out_off, K, N, M, 0);
}

__kernel void mul_mv_q6_k_f32_row(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                                  __global uchar* out, ulong out_off, int K, int N, int M) {
    mul_mv_kq_row(w, w_off, x, x_off, out, out_off, K, N, M, 1);
}

__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void mul_mv_q4_k_f32_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                        __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float part[MV_ROWS * WGS];
    mul_mv_kq_wg(w, w_off, x, x_off, out, out_off, K, N, M, part, 0);
}

__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void mul_mv_q6_k_f32_wg(__global const uchar* w, ulong w_off, __global const uchar* x, ulong x_off,
                        __global uchar* out, ulong out_off, int K, int N, int M) {
    __local float part[MV_ROWS * WGS];
    mul_mv_kq_wg(w, w_off, x, x_off, out, out_off, K, N, M, part, 1);
}
