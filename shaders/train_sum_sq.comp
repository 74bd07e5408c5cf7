// sum_sq_f32_f32: a deterministic two-stage sum of squares. Stage 1 (SQUARE): work-group g sums x[i]^2 over its
// contiguous range [g * WG * PER, (g + 1) * WG * PER), invocation t taking elements t, t + WG, ... (PER loop
// iterations, neighbouring invocations on neighbouring elements), then a shared-memory tree; it writes one partial
// per work-group. Stage 2 (sum_sq_f32_f32_final, no SQUARE): one work-group sums those partials the same way.
// Both orders are fixed by the launch, so the result is the same from run to run. PER (a push constant) is chosen
// by the host so that no invocation loops past lavapipe's 65,535-iteration limit.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;  // power of two

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };

layout(push_constant) uniform params {
    uint n;       // elements
    uint per;     // elements per invocation
    uint x_off, o_off;
} pc;

shared float red[gl_WorkGroupSize.x];

void main() {
    const uint g = group_index(), tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint base = g * wg * pc.per;
    float s = 0.0;
    for (uint t = 0u; t < pc.per; ++t) {
        const uint i = base + t * wg + tid;
        if (i >= pc.n) break;
        const float v = x[pc.x_off + i];
#if defined(SQUARE)
        s += v * v;
#else
        s += v;
#endif
    }
    red[tid] = s;
    barrier();
    for (uint h = wg / 2u; h > 0u; h >>= 1u) {
        if (tid < h) red[tid] += red[tid + h];
        barrier();
    }
    if (tid == 0u) o[pc.o_off + g] = red[0];
}
