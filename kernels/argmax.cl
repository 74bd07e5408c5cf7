// argmax: out[m] = the first index of the largest x[m][k]. A work-group holds ROWS rows of WGS work-items
// each (see rms_norm.cl); each keeps its best (value, index) with ties to the lower index, then a tree
// reduction with the same rule.

#ifndef WGS
#define WGS 64
#endif
#ifndef ROWS
#define ROWS 1
#endif

__kernel __attribute__((reqd_work_group_size(WGS, ROWS, 1)))
void argmax_f32_i32(__global const uchar* x, ulong x_off, __global uchar* out, ulong out_off, int K, int M) {
    __local float best_v_all[ROWS * WGS];
    __local int best_i_all[ROWS * WGS];
    __local float* best_v = best_v_all + get_local_id(1) * WGS;
    __local int* best_i = best_i_all + get_local_id(1) * WGS;
    const int lid = get_local_id(0);
    const int m = get_global_id(1);
    const int n = m < M ? K : 0;  // padding rows take part in the barriers only
    __global const float* xr = CVIEW(float, x, x_off) + (size_t)m * K;
    float bv = -INFINITY;
    int bi = K;  // "none yet": loses every comparison
    for (int k = lid; k < n; k += WGS) {
        if (xr[k] > bv || bi == K) {
            bv = xr[k];
            bi = k;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s) {
            const float v = best_v[lid + s];
            const int i = best_i[lid + s];
            if (i != K && (best_i[lid] == K || v > best_v[lid] || (v == best_v[lid] && i < best_i[lid]))) {
                best_v[lid] = v;
                best_i[lid] = i;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0 && m < M) VIEW(int, out, out_off)[m] = best_i[0] == K ? 0 : best_i[0];
}
