// rms_norm_back: the backward of rms_norm (w frozen) to its input. With r = 1 / sqrt(mean(x^2) + eps):
//   dx[i] = r * w[i] * dy[i] - x[i] * r^3 / K * sum_j w[j] * dy[j] * x[j]
// Two row reductions (sum x^2 and sum w*dy*x) in one pass, laid out as rms_norm.cl: a work-group holds ROWS rows
// of WGS work-items each (GPUs: WGS = 256, ROWS = 1, a local-memory tree per row; CPU devices such as PoCL, where a
// work-group is a loop: WGS = 1, ROWS = 64, i.e. one row per work-item). dx may alias dy: every element is read
// in the first pass, before the barriers, and each work-item rewrites only elements it reads again itself.

#ifndef WGS
#define WGS 64
#endif
#ifndef ROWS
#define ROWS 1
#endif

__kernel __attribute__((reqd_work_group_size(WGS, ROWS, 1)))
void rms_norm_back_f32(__global const uchar* x, ulong x_off, __global const uchar* w, ulong w_off,
                       __global const uchar* dy, ulong dy_off, __global uchar* dx, ulong dx_off, int K, int M,
                       float eps) {
    __local float ss_all[ROWS * WGS], sd_all[ROWS * WGS];
    __local float* ss_part = ss_all + get_local_id(1) * WGS;
    __local float* sd_part = sd_all + get_local_id(1) * WGS;
    const int lid = get_local_id(0);
    const int m = get_global_id(1);
    const int n = m < M ? K : 0;  // padding rows take part in the barriers only
    __global const float* xr = CVIEW(float, x, x_off) + (size_t)m * K;
    __global const float* dyr = CVIEW(float, dy, dy_off) + (size_t)m * K;
    __global const float* wr = CVIEW(float, w, w_off);
    float ss = 0.f, sd = 0.f;
    for (int k = lid; k < n; k += WGS) {
        ss = fma(xr[k], xr[k], ss);
        sd = fma(wr[k] * dyr[k], xr[k], sd);
    }
    ss_part[lid] = ss;
    sd_part[lid] = sd;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s) {
            ss_part[lid] += ss_part[lid + s];
            sd_part[lid] += sd_part[lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = 1.f / sqrt(ss_part[0] / (float)K + eps);
    const float c = sd_part[0] * r * r * r / (float)K;
    __global float* o = VIEW(float, dx, dx_off) + (size_t)m * K;
    for (int k = lid; k < n; k += WGS) o[k] = r * wr[k] * dyr[k] - xr[k] * c;
}
