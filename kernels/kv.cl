// KV cache writes and compaction. kv_write converts f32 rows into the cache type (f16 with round-to-nearest-
// even, like cpu_ref); kv_copy runs as gather-to-scratch then scatter, two kernels on the in-order queue, so
// every read happens before any write. Out-of-range slots are skipped and reported through the error word.

inline void kv_write(__global const uchar* src, ulong src_off, __global uchar* cache, ulong cache_off,
                     __global const uchar* slots, ulong slots_off, int K, int S, int M, __global int* err,
                     const int is_f16) {
    const int k = get_global_id(0), m = get_global_id(1);
    if (k >= K || m >= M) return;
    const int s = CVIEW(int, slots, slots_off)[m];
    if (s < 0 || s >= S) {
        if (k == 0) raise_error(err, ERR_KV_WRITE_SLOT);
        return;
    }
    const float v = CVIEW(float, src, src_off)[(size_t)m * K + k];
    const size_t i = (size_t)s * K + k;
    if (is_f16)
        vstore_half_rte(v, i, VIEW(half, cache, cache_off));
    else
        VIEW(float, cache, cache_off)[i] = v;
}

__kernel void kv_write_f32_f32(__global const uchar* src, ulong src_off, __global uchar* cache, ulong cache_off,
                               __global const uchar* slots, ulong slots_off, int K, int S, int M, __global int* err) {
    kv_write(src, src_off, cache, cache_off, slots, slots_off, K, S, M, err, 0);
}

__kernel void kv_write_f32_f16(__global const uchar* src, ulong src_off, __global uchar* cache, ulong cache_off,
                               __global const uchar* slots, ulong slots_off, int K, int S, int M, __global int* err) {
    kv_write(src, src_off, cache, cache_off, slots, slots_off, K, S, M, err, 1);
}

// Rows are moved as 16-bit units (f32 and f16 rows are both whole units): `units` per row.
__kernel void kv_gather(__global const uchar* cache, ulong cache_off, __global const uchar* idx, ulong idx_off,
                        __global ushort* staged, int units, int S, int n, __global int* err) {
    const int u = get_global_id(0), i = get_global_id(1);
    if (u >= units || i >= n) return;
    const int s = CVIEW(int, idx, idx_off)[i];
    if (s < 0 || s >= S) {
        if (u == 0) raise_error(err, ERR_KV_COPY_SLOT);
        return;
    }
    staged[(size_t)i * units + u] = CVIEW(ushort, cache, cache_off)[(size_t)s * units + u];
}

__kernel void kv_scatter(__global uchar* cache, ulong cache_off, __global const uchar* idx, ulong idx_off,
                         __global const ushort* staged, __global const uchar* src_idx, ulong src_idx_off, int units,
                         int S, int n, __global int* err) {
    const int u = get_global_id(0), i = get_global_id(1);
    if (u >= units || i >= n) return;
    const int d = CVIEW(int, idx, idx_off)[i];
    const int s = CVIEW(int, src_idx, src_idx_off)[i];
    if (d < 0 || d >= S) {
        if (u == 0) raise_error(err, ERR_KV_COPY_SLOT);
        return;
    }
    if (s < 0 || s >= S) return;  // its gather was skipped (and reported): nothing valid to write
    VIEW(ushort, cache, cache_off)[(size_t)d * units + u] = staged[(size_t)i * units + u];
}
