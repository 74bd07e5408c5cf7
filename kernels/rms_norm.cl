// rms_norm: out[m] = x[m] / sqrt(mean(x[m]^2) + eps) * w. A work-group holds ROWS rows of WGS work-items
// each (GPUs: WGS = 256, ROWS = 1; CPU devices, where a work-group is a loop: WGS = 1, ROWS = 64). out may
// alias x: every element is read before the barrier that precedes the writes.

#ifndef WGS
#define WGS 64
#endif
#ifndef ROWS
#define ROWS 1
#endif

__kernel __attribute__((reqd_work_group_size(WGS, ROWS, 1)))
void rms_norm_f32(__global const uchar* x, ulong x_off, __global const uchar* w, ulong w_off, __global uchar* out,
                  ulong out_off, int K, int M, float eps) {
    __local float part_all[ROWS * WGS];
    __local float* part = part_all + get_local_id(1) * WGS;
    const int lid = get_local_id(0);
    const int m = get_global_id(1);
    const int n = m < M ? K : 0;  // padding rows take part in the barriers only
    __global const float* xr = CVIEW(float, x, x_off) + (size_t)m * K;
    float ss = 0.f;
    for (int k = lid; k < n; k += WGS) ss += xr[k] * xr[k];
    part[lid] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float scale = 1.f / sqrt(part[0] / (float)K + eps);
    __global const float* wr = CVIEW(float, w, w_off);
    __global float* o = VIEW(float, out, out_off) + (size_t)m * K;
    for (int k = lid; k < n; k += WGS) o[k] = xr[k] * scale * wr[k];
}
