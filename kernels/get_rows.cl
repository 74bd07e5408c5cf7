// get_rows: out[m] = table[ids[m]] as f32. f32/f16 tables: one work-item per output element. Q8_0/Q4_0 tables
// (K a multiple of 32): one work-item per 32-element block of an output row, decoded in place (common.cl)
// and stored as two 16-wide vectors. An id outside the table leaves its row untouched and raises
// ERR_GET_ROWS_ID.

inline void get_rows(__global const uchar* table, ulong table_off, __global const uchar* ids, ulong ids_off,
                     __global uchar* out, ulong out_off, int K, int R, int M, __global int* err, const int is_f16) {
    const int k = get_global_id(0), m = get_global_id(1);
    if (k >= K || m >= M) return;
    const int id = CVIEW(int, ids, ids_off)[m];
    if (id < 0 || id >= R) {
        if (k == 0) raise_error(err, ERR_GET_ROWS_ID);
        return;
    }
    const size_t row_bytes = (size_t)K * (is_f16 ? 2 : 4);
    __global const uchar* row = table + table_off + (size_t)id * row_bytes;
    VIEW(float, out, out_off)[(size_t)m * K + k] = load1(row, k, is_f16);
}

__kernel void get_rows_f32_f32(__global const uchar* table, ulong table_off, __global const uchar* ids,
                               ulong ids_off, __global uchar* out, ulong out_off, int K, int R, int M,
                               __global int* err) {
    get_rows(table, table_off, ids, ids_off, out, out_off, K, R, M, err, 0);
}

__kernel void get_rows_f16_f32(__global const uchar* table, ulong table_off, __global const uchar* ids,
                               ulong ids_off, __global uchar* out, ulong out_off, int K, int R, int M,
                               __global int* err) {
    get_rows(table, table_off, ids, ids_off, out, out_off, K, R, M, err, 1);
}

inline void get_rows_q(__global const uchar* table, ulong table_off, __global const uchar* ids, ulong ids_off,
                       __global uchar* out, ulong out_off, int K, int R, int M, __global int* err, const int is_q4) {
    const int blk = get_global_id(0), m = get_global_id(1), nb = K / QK;
    if (blk >= nb || m >= M) return;
    const int id = CVIEW(int, ids, ids_off)[m];
    if (id < 0 || id >= R) {
        if (blk == 0) raise_error(err, ERR_GET_ROWS_ID);
        return;
    }
    const int bb = is_q4 ? Q4_0_BYTES : Q8_0_BYTES;
    float16 lo, hi;
    dequant_block(table + table_off + ((size_t)id * nb + blk) * bb, &lo, &hi, is_q4);
    __global float* o = VIEW(float, out, out_off) + (size_t)m * K + (size_t)blk * QK;
    vstore16(lo, 0, o);
    vstore16(hi, 1, o);
}

__kernel void get_rows_q8_0_f32(__global const uchar* table, ulong table_off, __global const uchar* ids,
                                ulong ids_off, __global uchar* out, ulong out_off, int K, int R, int M,
                                __global int* err) {
    get_rows_q(table, table_off, ids, ids_off, out, out_off, K, R, M, err, 0);
}

__kernel void get_rows_q4_0_f32(__global const uchar* table, ulong table_off, __global const uchar* ids,
                                ulong ids_off, __global uchar* out, ulong out_off, int K, int R, int M,
                                __global int* err) {
    get_rows_q(table, table_off, ids, ids_off, out, out_off, K, R, M, err, 1);
}
