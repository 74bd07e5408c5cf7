// cross_entropy of logits z {V, M} against sparse targets: row m puts probability p[m][j] on token ids[m][j], j < k.
//   loss[m] = sum_j p[m][j] * (logsumexp(z[m]) - z[m][ids[m][j]])
//   d_logits[m] = grad_scale * (P_m * softmax(z[m]) - sum_j p[m][j] * onehot(ids[m][j])),  P_m = sum_j p[m][j]
// One row per WGS work-items, ROWS rows per work-group (GPUs: WGS = 256, ROWS = 1, local-memory trees for the max
// and the sum over V up to 32000+; CPU devices such as PoCL: WGS = 1, ROWS = 64, one row per work-item). Phases:
//   1. max and sum of exp over the row (two reductions);
//   2. work-item 0 of the row computes the loss and P_m from the k targets, reading z[ids] before any store (so
//      d_logits may alias z) and publishing P_m through local memory;
//   3. every work-item writes grad_scale * P_m * softmax for its elements (reading z before overwriting it);
//   4. after a global-memory barrier, work-item 0 subtracts grad_scale * p[j] at each target in increasing j:
//      O(V + k) instead of a k-long search per element, and repeated ids accumulate in a fixed order.
// A row whose p are all zero (masked position) gets loss 0 and a zero gradient. An id outside [0, V) is skipped
// and raises ERR_CROSS_ENTROPY_ID.

#ifndef WGS
#define WGS 64
#endif
#ifndef ROWS
#define ROWS 1
#endif

// Bits of the error word used here (backends/opencl/opencl_backend.h has the same values).
#define ERR_CROSS_ENTROPY_ID 64

__kernel __attribute__((reqd_work_group_size(WGS, ROWS, 1)))
void cross_entropy_f32(__global const uchar* z, ulong z_off, __global const uchar* ids, ulong ids_off,
                       __global const uchar* p, ulong p_off, __global uchar* loss, ulong loss_off,
                       __global uchar* d_logits, ulong d_off, int V, int KT, int M, float grad_scale,
                       __global int* err) {
    __local float part_all[ROWS * WGS];
    __local float row_p_all[ROWS];
    __local int row_any_all[ROWS];
    __local float* part = part_all + get_local_id(1) * WGS;
    __local float* row_p = row_p_all + get_local_id(1);
    __local int* row_any = row_any_all + get_local_id(1);
    const int lid = get_local_id(0);
    const int m = get_global_id(1);
    const int n = m < M ? V : 0;  // padding rows take part in the barriers only
    __global const float* zr = CVIEW(float, z, z_off) + (size_t)m * V;
    __global float* dr = VIEW(float, d_logits, d_off) + (size_t)m * V;

    float best = -INFINITY;
    for (int i = lid; i < n; i += WGS) best = fmax(best, zr[i]);
    part[lid] = best;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] = fmax(part[lid], part[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    best = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float sum = 0.f;
    for (int i = lid; i < n; i += WGS) sum += exp(zr[i] - best);
    part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WGS / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    sum = part[0];

    __global const int* idr = CVIEW(int, ids, ids_off) + (size_t)m * KT;
    __global const float* pr = CVIEW(float, p, p_off) + (size_t)m * KT;
    if (lid == 0 && m < M) {
        const float lse = best + log(sum);
        float l = 0.f, ptot = 0.f;
        int any = 0;
        for (int j = 0; j < KT; ++j) {
            const int id = idr[j];
            const float pj = pr[j];
            any |= pj != 0.f;
            if (id < 0 || id >= V) {
                raise_error(err, ERR_CROSS_ENTROPY_ID);
                continue;
            }
            ptot += pj;
            l += pj * (lse - zr[id]);
        }
        VIEW(float, loss, loss_off)[m] = any ? l : 0.f;
        *row_p = any ? ptot : 0.f;
        *row_any = any;
    }
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);  // z[ids] are read before any gradient is stored
    const float coef = grad_scale * *row_p / sum;
    for (int i = lid; i < n; i += WGS) dr[i] = coef * exp(zr[i] - best);
    barrier(CLK_GLOBAL_MEM_FENCE);
    if (lid == 0 && m < M && *row_any) {
        for (int j = 0; j < KT; ++j) {
            const int id = idr[j];
            if (id >= 0 && id < V) dr[id] -= grad_scale * pr[j];
        }
    }
}
