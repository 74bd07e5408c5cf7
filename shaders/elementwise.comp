// Element-wise f32 ops, one element per invocation (no loop: nothing for lavapipe's loop limit to count).
//   add_f32_f32:    o = a + b
//   swiglu_f32_f32: o = silu(a) * b = a / (1 + exp(-a)) * b
// o may alias a (in-place): each invocation reads its element before writing it.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) buffer O { float o[]; };

layout(push_constant) uniform params {
    uint n;
    uint a_off, b_off, o_off;
} pc;

void main() {
    const uint i = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (i >= pc.n) return;
    const float x = a[pc.a_off + i];
    const float y = b[pc.b_off + i];
#if defined(OP_SWIGLU)
    o[pc.o_off + i] = x / (1.0 + exp(-x)) * y;
#else
    o[pc.o_off + i] = x + y;
#endif
}
