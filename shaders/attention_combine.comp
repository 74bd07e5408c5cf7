// attention_combine_f32: merges the n_split partial results {max, sum, acc[D]} of attention_<cache> for one
// (row, head) per work-group: out = sum_p e^(max_p - M) acc_p / sum_p e^(max_p - M) sum_p, M = max over
// non-empty parts; a row that saw nothing gets zeros. Loop count per invocation: 2 n_split D / WG.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer P { float part[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };

layout(push_constant) uniform params {
    uint hq, d, n_split;
    uint p_off, o_off;
    uint row_base;
} pc;

void main() {
    const uint head = gl_WorkGroupID.x, row = pc.row_base + gl_WorkGroupID.y;
    const uint out_row = row * pc.hq + head;
    const uint pb = pc.p_off + out_row * pc.n_split * (pc.d + 2u);
    for (uint d = gl_LocalInvocationID.x; d < pc.d; d += gl_WorkGroupSize.x) {
        float mx = NEG_INF;
        for (uint p = 0u; p < pc.n_split; ++p) {
            const uint b = pb + p * (pc.d + 2u);
            if (part[b + 1u] > 0.0) mx = max(mx, part[b]);
        }
        float l = 0.0, a = 0.0;
        for (uint p = 0u; p < pc.n_split; ++p) {
            const uint b = pb + p * (pc.d + 2u);
            if (part[b + 1u] > 0.0) {
                const float w = exp(part[b] - mx);
                l += part[b + 1u] * w;
                a += part[b + 2u + d] * w;
            }
        }
        o[pc.o_off + out_row * pc.d + d] = l > 0.0 ? a / l : 0.0;
    }
}
