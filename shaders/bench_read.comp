// bench_read_f32[_vec4|_texel]: the trivial read kernel the benchmarks compare bandwidth-bound kernels against
// in the same run: every invocation sums a grid-strided slice of x (scalar or vec4 storage-buffer loads, or
// texel fetches from a uniform texel buffer) and writes one value.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

#if defined(VEC4)
layout(std430, binding = 0) readonly buffer X { vec4 x[]; };
#elif defined(TEXEL)
layout(binding = 0) uniform samplerBuffer xt;
#define x(i) texelFetch(xt, int(i)).x
#elif defined(TEXEL4)
layout(binding = 0) uniform samplerBuffer xt;
#define x(i) texelFetch(xt, int(i))
#else
layout(std430, binding = 0) readonly buffer X { float x[]; };
#endif
layout(std430, binding = 1) writeonly buffer O { float o[]; };

layout(push_constant) uniform params {
    uint n;      // elements of x's type (vec4 or float)
    uint x_off;  // in the same units
} pc;

void main() {
    const uint id = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    const uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
#if defined(VEC4) || defined(TEXEL4)
    vec4 acc = vec4(0.0);
#else
    float acc = 0.0;
#endif
#if defined(TEXEL) || defined(TEXEL4)
    for (uint i = id; i < pc.n; i += stride) acc += x(pc.x_off + i);
#else
    for (uint i = id; i < pc.n; i += stride) acc += x[pc.x_off + i];
#endif
#if defined(VEC4) || defined(TEXEL4)
    o[id] = acc.x + acc.y + acc.z + acc.w;
#else
    o[id] = acc;
#endif
}
