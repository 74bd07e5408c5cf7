// rms_norm_back_f32_f32: the backward of rms_norm (w frozen) to its input, with r = 1 / sqrt(mean(x^2) + eps):
//   dx[i] = r * w[i] * dy[i] - x[i] * r^3 / K * sum_j w[j] * dy[j] * x[j]
// One work-group per row: each invocation strides over the row summing x^2 and w * dy * x (K / WG iterations),
// a shared-memory tree combines both sums, and a second strided pass writes dx (the GPU form, as rms_norm.comp).
// rms_norm_back_f32_f32_lane (LANE): one invocation per row, the same two passes with no barriers (CPU-like
// devices, where work-groups run as SIMD loops; 2 K iterations, which the host keeps under lavapipe's limit).
// dx may alias dy: an element of dy is read in the second pass by the invocation that then writes it, after every
// first-pass read of the row (the barrier, or program order within the row's one invocation).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;  // power of two

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) buffer DY { float dy[]; };
layout(std430, binding = 3) buffer DX { float dx[]; };

layout(push_constant) uniform params {
    uint k, m;
    uint x_off, w_off, dy_off, dx_off;
    float eps;
} pc;

#if defined(LANE)
void main() {
    const uint row = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (row >= pc.m) return;
    const uint xr = pc.x_off + row * pc.k, yr = pc.dy_off + row * pc.k, orow = pc.dx_off + row * pc.k;
    float ss = 0.0, dot_wyx = 0.0;
    for (uint i = 0u; i < pc.k; ++i) {
        const float xv = x[xr + i];
        ss += xv * xv;
        dot_wyx += w[pc.w_off + i] * dy[yr + i] * xv;
    }
    const float r = 1.0 / sqrt(ss / float(pc.k) + pc.eps);
    const float c = r * r * r / float(pc.k) * dot_wyx;
    for (uint i = 0u; i < pc.k; ++i) dx[orow + i] = r * w[pc.w_off + i] * dy[yr + i] - x[xr + i] * c;
}
#else
shared vec2 red[gl_WorkGroupSize.x];

void main() {
    const uint row = group_index();
    if (row >= pc.m) return;  // uniform over the work-group
    const uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint xr = pc.x_off + row * pc.k, yr = pc.dy_off + row * pc.k, orow = pc.dx_off + row * pc.k;
    vec2 part = vec2(0.0);
    for (uint i = tid; i < pc.k; i += wg) {
        const float xv = x[xr + i];
        part += vec2(xv * xv, w[pc.w_off + i] * dy[yr + i] * xv);
    }
    red[tid] = part;
    barrier();
    for (uint s = wg / 2u; s > 0u; s >>= 1u) {
        if (tid < s) red[tid] += red[tid + s];
        barrier();
    }
    const float r = 1.0 / sqrt(red[0].x / float(pc.k) + pc.eps);
    const float c = r * r * r / float(pc.k) * red[0].y;
    for (uint i = tid; i < pc.k; i += wg) dx[orow + i] = r * w[pc.w_off + i] * dy[yr + i] - x[xr + i] * c;
}
#endif
