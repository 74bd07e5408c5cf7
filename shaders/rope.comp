// rope_f32_f32: in-place rotary embedding of x {D, H, M}; one invocation per rotated pair (2i, 2i+1).
// theta = pos[m] * inv_freq[i] with inv_freq[i] = 1 / base^(2i / n_rot) computed on the host exactly as
// cpu_ref does (a table bound at binding 2), and cos/sin from our own range reduction + polynomials:
// Vulkan only promises 2^-11 absolute error for sin/cos on [-pi, pi] and nothing outside it.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer P { int pos[]; };
layout(std430, binding = 2) readonly buffer F { float inv_freq[]; };

layout(push_constant) uniform params {
    uint d, h, m;
    uint half_rot;  // n_rot / 2
    uint x_off, p_off, f_off;
} pc;

// (cos t, sin t): t = q pi/2 + r with |r| <= pi/4. pi/2 is split in three parts (the first with 8 significant
// bits, so q * part is exact for |q| < 2^16, i.e. |t| < ~1e5); `precise` forbids fusing or reordering them.
vec2 cos_sin(float t) {
    const float q = round(t * 0.636619772367581343);
    precise float r = t - q * 1.5703125;
    r = r - q * 4.837512969970703125e-4;
    r = r - q * 7.54978995489188216e-8;
    const float r2 = r * r;
    // Taylor series to degree 11 / 12: truncation error < 1e-11 on [-pi/4, pi/4].
    const float s = r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0 +
                                                   r2 * (-1.0 / 39916800.0))))));
    const float c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 +
                                            r2 * (-1.0 / 3628800.0 + r2 * (1.0 / 479001600.0))))));
    switch (int(q) & 3) {
        case 0: return vec2(c, s);
        case 1: return vec2(-s, c);
        case 2: return vec2(-c, -s);
        default: return vec2(s, -c);
    }
}

void main() {
    const uint i = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (i >= pc.m * pc.h * pc.half_rot) return;
    const uint p = i % pc.half_rot, r = i / pc.half_rot;
    const uint head = r % pc.h, m = r / pc.h;
    const float theta = float(pos[pc.p_off + m]) * inv_freq[pc.f_off + p];
    const vec2 cs = cos_sin(theta);
    const uint e = pc.x_off + (m * pc.h + head) * pc.d + 2u * p;
    const float a = x[e], b = x[e + 1u];
    x[e] = a * cs.x - b * cs.y;
    x[e + 1u] = a * cs.y + b * cs.x;
}
