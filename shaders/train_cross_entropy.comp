// cross_entropy_f32_f32: loss and gradient of a softmax cross-entropy against sparse targets (backends/backend.h):
//   loss[m] = sum_j p[m][j] * (lse(z[m]) - z[m][ids[m][j]]),  P_m = sum_j p[m][j]
//   d[m] = grad_scale * (P_m * softmax(z[m]) - sum_j p[m][j] * onehot(ids[m][j]))
// One work-group per row with shared-memory reductions: a strided pass for the max, one for the sum of
// exp(z - max) (V / WG iterations each, so V = 32000 is 125 per invocation at WG = 256: far under lavapipe's
// 65,535-iteration limit; the host checks), then invocation 0 walks the k targets (loss, P_m; reading z before
// any write, since d may alias z), a barrier, the strided gradient pass, and invocation 0 subtracts the targets in
// order j = 0.. (repeated ids add up, no race). A row whose p are all 0 gets loss 0 and exact zeros. An id outside
// [0, V) sets a status bit and is skipped.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "train.glsl"

layout(local_size_x_id = 0) in;  // power of two

layout(std430, binding = 0) buffer Z { float z[]; };
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, binding = 2) readonly buffer Pr { float p[]; };
layout(std430, binding = 3) writeonly buffer L { float loss[]; };
layout(std430, binding = 4) buffer D { float d[]; };
DECLARE_STATUS(5)

layout(push_constant) uniform params {
    uint v, k, m;
    uint z_off, i_off, p_off, l_off, d_off;
    float grad_scale;
} pc;

shared float red[gl_WorkGroupSize.x];
shared float total_p;
shared bool masked;

// The reduction of every invocation's `val` (max or sum) in red[0]; all invocations in step at entry and exit.
void reduce(float val, bool is_max) {
    const uint tid = gl_LocalInvocationID.x;
    red[tid] = val;
    barrier();
    for (uint h = gl_WorkGroupSize.x / 2u; h > 0u; h >>= 1u) {
        if (tid < h) red[tid] = is_max ? max(red[tid], red[tid + h]) : red[tid] + red[tid + h];
        barrier();
    }
}

void main() {
    const uint row = group_index();
    if (row >= pc.m) return;  // uniform over the work-group
    const uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint zr = pc.z_off + row * pc.v, dr = pc.d_off + row * pc.v;

    float mx = NEG_INF;
    for (uint i = tid; i < pc.v; i += wg) mx = max(mx, z[zr + i]);
    reduce(mx, true);
    mx = red[0];
    barrier();
    float s = 0.0;
    for (uint i = tid; i < pc.v; i += wg) s += exp(z[zr + i] - mx);
    reduce(s, false);
    const float lse = mx + log(red[0]);

    if (tid == 0u) {
        float l = 0.0, tp = 0.0;
        bool all_zero = true;
        for (uint j = 0u; j < pc.k; ++j) {
            const int id = ids[pc.i_off + row * pc.k + j];
            const float pj = p[pc.p_off + row * pc.k + j];
            if (id < 0 || uint(id) >= pc.v) {
                atomicOr(status_word, ERR_CROSS_ENTROPY_ID);
                continue;
            }
            l += pj * (lse - z[zr + uint(id)]);
            tp += pj;
            all_zero = all_zero && pj == 0.0;
        }
        loss[pc.l_off + row] = all_zero ? 0.0 : l;
        total_p = tp;
        masked = all_zero;
    }
    barrier();
    const float scale = pc.grad_scale * total_p;
    for (uint i = tid; i < pc.v; i += wg) d[dr + i] = masked ? 0.0 : scale * exp(z[zr + i] - lse);
    memoryBarrierBuffer();
    barrier();
    if (tid == 0u && !masked) {
        for (uint j = 0u; j < pc.k; ++j) {
            const int id = ids[pc.i_off + row * pc.k + j];
            if (id < 0 || uint(id) >= pc.v) continue;
            d[dr + uint(id)] -= pc.grad_scale * p[pc.p_off + row * pc.k + j];
        }
    }
}
