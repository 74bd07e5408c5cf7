// softmax_f32_f32: row-wise softmax with the row maximum subtracted, one work-group per row.
// Pass 1 keeps an online (max, sum) per invocation, merged across the work-group; pass 2 writes
// exp(x - max) / sum. Each invocation loops 2 K / WG times. out may alias x (reads of pass 1 precede the barrier).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;  // power of two

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) buffer O { float o[]; };

layout(push_constant) uniform params {
    uint k, m;
    uint x_off, o_off;
} pc;

shared float red_max[gl_WorkGroupSize.x];
shared float red_sum[gl_WorkGroupSize.x];

void main() {
    const uint row = group_index();
    if (row >= pc.m) return;
    const uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint xr = pc.x_off + row * pc.k, orow = pc.o_off + row * pc.k;
    float mx = NEG_INF, sum = 0.0;
    for (uint i = tid; i < pc.k; i += wg) {
        const float v = x[xr + i];
        if (v > mx) {
            sum = sum * exp(mx - v) + 1.0;
            mx = v;
        } else {
            sum += exp(v - mx);
        }
    }
    red_max[tid] = mx;
    red_sum[tid] = sum;
    barrier();
    for (uint s = wg / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            const float m1 = red_max[tid], m2 = red_max[tid + s];
            const float mm = max(m1, m2);
            if (mm != NEG_INF) {
                red_sum[tid] = (m1 == NEG_INF ? 0.0 : red_sum[tid] * exp(m1 - mm)) +
                               (m2 == NEG_INF ? 0.0 : red_sum[tid + s] * exp(m2 - mm));
            }
            red_max[tid] = mm;
        }
        barrier();
    }
    const float row_max = red_max[0], row_sum = red_sum[0];
    for (uint i = tid; i < pc.k; i += wg) o[orow + i] = exp(x[xr + i] - row_max) / row_sum;
}
