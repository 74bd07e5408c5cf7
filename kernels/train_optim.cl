// The optimizer side of training: adamw (one AdamW step, element-wise) and sum_sq (the squared global norm that
// gradient clipping needs).
//   adamw_f32: one work-item per element, in place on param, m and v, exactly the steps of backends/backend.h's
//              adamw_params in that order; the bias corrections bc1 = 1 - beta1^step, bc2 = 1 - beta2^step come
//              from the host (adamw_bias_corrections(), double precision), so every backend uses the same values.
//   sum_sq:    a deterministic two-stage reduction, no atomics. Stage 1 (sum_sq_partial_f32): work-group g sums the
//              contiguous chunk [g * chunk, (g + 1) * chunk) of x -- its WGS work-items take every WGS-th element
//              (coalesced on GPUs; WGS = 1 on CPU devices, where a work-group is a loop, makes it one sequential
//              stream per core) with compensated (Kahan) sums, then a local-memory tree -- and writes partial[g].
//              Stage 2 (sum_sq_final_f32, one work-item) adds the partials in increasing g. The group count and
//              chunk depend only on n and the device's WGS, so repeated runs give the same bits.

#ifndef WGS
#define WGS 64
#endif

__kernel void adamw_f32(__global uchar* param, ulong param_off, __global const uchar* grad, ulong grad_off,
                        __global uchar* m, ulong m_off, __global uchar* v, ulong v_off, int n, float lr, float beta1,
                        float beta2, float eps, float weight_decay, float grad_scale, float bc1, float bc2) {
    const int i = get_global_id(0);
    if (i >= n) return;
    __global float* pp = VIEW(float, param, param_off) + i;
    __global float* mp = VIEW(float, m, m_off) + i;
    __global float* vp = VIEW(float, v, v_off) + i;
    const float g = CVIEW(float, grad, grad_off)[i] * grad_scale;
    float w = *pp;
    w -= lr * weight_decay * w;
    const float mi = beta1 * *mp + (1.f - beta1) * g;
    const float vi = beta2 * *vp + (1.f - beta2) * g * g;
    w -= lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
    *mp = mi;
    *vp = vi;
    *pp = w;
}

__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void sum_sq_partial_f32(__global const uchar* x, ulong x_off, int n, int chunk, __global float* partial) {
    __local float part[WGS];
    const int lid = get_local_id(0), g = get_group_id(0);
    __global const float* xr = CVIEW(float, x, x_off);
    const long begin = (long)g * chunk, end = min((long)n, begin + chunk);
    float sum = 0.f, c = 0.f;  // Kahan: c carries the low-order bits lost by sum
    for (long i = begin + lid; i < end; i += WGS) {
        const float y = fma(xr[i], xr[i], -c);
        const float t = sum + y;
        c = (t - sum) - y;
        sum = t;
    }
    part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) partial[g] = part[0];
}

__kernel void sum_sq_final_f32(__global const float* partial, int groups, __global uchar* out, ulong out_off) {
    if (get_global_id(0) != 0) return;
    float sum = 0.f, c = 0.f;
    for (int g = 0; g < groups; ++g) {
        const float y = partial[g] - c;
        const float t = sum + y;
        c = (t - sum) - y;
        sum = t;
    }
    VIEW(float, out, out_off)[0] = sum;
}
