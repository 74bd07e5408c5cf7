// argmax_f32_i32: out[m] = the index of the largest x[m][k], the first one on ties; one work-group per row.
// Invocation t scans k = t, t + WG, ... (ascending, strict >, so it keeps its first maximum); the tree merge
// prefers the larger value and, on equal values, the smaller index. Each invocation loops K / WG times.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;  // power of two

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer O { int o[]; };

layout(push_constant) uniform params {
    uint k, m;
    uint x_off, o_off;
} pc;

shared float red_val[gl_WorkGroupSize.x];
shared uint red_idx[gl_WorkGroupSize.x];

void main() {
    const uint row = group_index();
    if (row >= pc.m) return;
    const uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint xr = pc.x_off + row * pc.k;
    const uint none = 0xffffffffu;
    float best = NEG_INF;
    uint idx = none;
    for (uint i = tid; i < pc.k; i += wg) {
        const float v = x[xr + i];
        if (idx == none || v > best) {
            best = v;
            idx = i;
        }
    }
    red_val[tid] = best;
    red_idx[tid] = idx;
    barrier();
    for (uint s = wg / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            const uint oi = red_idx[tid + s];
            const float ov = red_val[tid + s];
            const uint mi = red_idx[tid];
            if (oi != none && (mi == none || ov > red_val[tid] || (ov == red_val[tid] && oi < mi))) {
                red_val[tid] = ov;
                red_idx[tid] = oi;
            }
        }
        barrier();
    }
    if (tid == 0u) o[pc.o_off + row] = int(red_idx[0]);
}
