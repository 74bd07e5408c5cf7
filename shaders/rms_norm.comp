// rms_norm_f32_f32: out[m] = x[m] / sqrt(mean(x[m]^2) + eps) * w, one work-group per row: each invocation
// loops K / WG times and a shared-memory tree sums the squares (the GPU variant).
// rms_norm_f32_f32_lane (LANE): one invocation per row, two passes over it, no barriers (CPU-like devices);
// rms_norm_f32_f32_texel (LANE TEXEL): the same reading x and w as 4-wide texels (K and offsets multiples of 4).
// The host keeps every invocation's loop count under lavapipe's 65,535-iteration limit.
// out may alias x: every read of the sum-of-squares pass precedes the first write of that row (the barrier,
// or program order within the one invocation of a row).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;  // power of two

#if defined(TEXEL)
layout(binding = 0) uniform samplerBuffer x4;
layout(binding = 1) uniform samplerBuffer w4;
#else
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
#endif
layout(std430, binding = 2) buffer O { float o[]; };

layout(push_constant) uniform params {
    uint k, m;
    uint x_off, w_off, o_off;
    float eps;
} pc;

#if defined(LANE)
void main() {
    const uint row = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (row >= pc.m) return;
    const uint orow = pc.o_off + row * pc.k;
#if defined(TEXEL)
    const uint xr = (pc.x_off + row * pc.k) / 4u, wb = pc.w_off / 4u, kq = pc.k / 4u;
    vec4 ss4 = vec4(0.0);
    for (uint i = 0u; i < kq; ++i) {
        const vec4 v = texelFetch(x4, int(xr + i));
        ss4 += v * v;
    }
    const float scale = 1.0 / sqrt((ss4.x + ss4.y + ss4.z + ss4.w) / float(pc.k) + pc.eps);
    for (uint i = 0u; i < kq; ++i) {
        const vec4 v = texelFetch(x4, int(xr + i)) * scale * texelFetch(w4, int(wb + i));
        [[unroll]] for (uint c = 0u; c < 4u; ++c) o[orow + 4u * i + c] = v[c];
    }
#else
    const uint xr = pc.x_off + row * pc.k;
    float ss = 0.0;
    for (uint i = 0u; i < pc.k; ++i) ss += x[xr + i] * x[xr + i];
    const float scale = 1.0 / sqrt(ss / float(pc.k) + pc.eps);
    for (uint i = 0u; i < pc.k; ++i) o[orow + i] = x[xr + i] * scale * w[pc.w_off + i];
#endif
}
#else
shared float red[gl_WorkGroupSize.x];

void main() {
    const uint row = group_index();
    if (row >= pc.m) return;  // uniform over the work-group
    const uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint xr = pc.x_off + row * pc.k, orow = pc.o_off + row * pc.k;
    float ss = 0.0;
    for (uint i = tid; i < pc.k; i += wg) {
        const float v = x[xr + i];
        ss += v * v;
    }
    red[tid] = ss;
    barrier();
    for (uint s = wg / 2u; s > 0u; s >>= 1u) {
        if (tid < s) red[tid] += red[tid + s];
        barrier();
    }
    const float scale = 1.0 / sqrt(red[0] / float(pc.k) + pc.eps);
    for (uint i = tid; i < pc.k; i += wg) o[orow + i] = x[xr + i] * scale * w[pc.w_off + i];
}
#endif
