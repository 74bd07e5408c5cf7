// get_rows from K-quant tables (Q4_K / Q6_K, K a multiple of 256): out[m] = table[ids[m]] as f32, one work-item
// per 16-weight chunk of an output row (kquant.cl), decoded in place (only the requested rows are ever
// dequantized; bit-identical to cpu_ref) and stored as one 16-wide vector. An id outside the table leaves its
// row untouched and raises ERR_GET_ROWS_ID, as kernels/get_rows.cl does.

inline void get_rows_kq(__global const uchar* table, ulong table_off, __global const uchar* ids, ulong ids_off,
                        __global uchar* out, ulong out_off, int K, int R, int M, __global int* err, const int is_q6) {
    const int c = get_global_id(0), m = get_global_id(1), nb = K / QK_K;
    if (c >= nb * 16 || m >= M) return;
    const int id = CVIEW(int, ids, ids_off)[m];
    if (id < 0 || id >= R) {
        if (c == 0) raise_error(err, ERR_GET_ROWS_ID);
        return;
    }
    const int blk = c >> 4, t = c & 15, bb = is_q6 ? Q6_K_BYTES : Q4_K_BYTES;
    const float16 v = kq_chunk(table + table_off + ((size_t)id * nb + blk) * bb, t, is_q6);
    vstore16(v, 0, VIEW(float, out, out_off) + (size_t)m * K + (size_t)blk * QK_K + kq_chunk_first(t, is_q6));
}

__kernel void get_rows_q4_k_f32(__global const uchar* table, ulong table_off, __global const uchar* ids,
                                ulong ids_off, __global uchar* out, ulong out_off, int K, int R, int M,
                                __global int* err) {
    get_rows_kq(table, table_off, ids, ids_off, out, out_off, K, R, M, err, 0);
}

__kernel void get_rows_q6_k_f32(__global const uchar* table, ulong table_off, __global const uchar* ids,
                                ulong ids_off, __global uchar* out, ulong out_off, int K, int R, int M,
                                __global int* err) {
    get_rows_kq(table, table_off, ids, ids_off, out, out_off, K, R, M, err, 1);
}
