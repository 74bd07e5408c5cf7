// softmax: row-wise, max-subtracted. A work-group holds ROWS rows of WGS work-items each (see rms_norm.cl);
// out may alias x (each work-item rewrites only elements it read itself, after both reductions' barriers).

#ifndef WGS
#define WGS 64
#endif
#ifndef ROWS
#define ROWS 1
#endif

__kernel __attribute__((reqd_work_group_size(WGS, ROWS, 1)))
void softmax_f32(__global const uchar* x, ulong x_off, __global uchar* out, ulong out_off, int K, int M) {
    __local float part_all[ROWS * WGS];
    __local float* part = part_all + get_local_id(1) * WGS;
    const int lid = get_local_id(0);
    const int m = get_global_id(1);
    const int n = m < M ? K : 0;  // padding rows take part in the barriers only
    __global const float* xr = CVIEW(float, x, x_off) + (size_t)m * K;
    __global float* o = VIEW(float, out, out_off) + (size_t)m * K;
    float best = -INFINITY;
    for (int k = lid; k < n; k += WGS) best = fmax(best, xr[k]);
    part[lid] = best;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] = fmax(part[lid], part[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    best = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float sum = 0.f;
    for (int k = lid; k < n; k += WGS) {
        const float e = exp(xr[k] - best);
        o[k] = e;
        sum += e;
    }
    part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = 1.f / part[0];
    for (int k = lid; k < n; k += WGS) o[k] *= inv;
}
