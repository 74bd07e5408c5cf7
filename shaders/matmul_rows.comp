// matmul_<w>_f32_rows: out[m][n] = sum_k w[n][k] x[m][k] for CPU-like devices: every invocation computes RN
// output rows for a chunk of MC activation rows (work-group z), looping over k on its own: no shared
// memory, no barriers. lavapipe turns every buffer load inside a loop into a loop over the SIMD lanes, so
// the cost is the number of loads: RN weight loads + MC activation loads serve RN * MC products per k
// (f16 weights: one 32-bit load per two weights when the rows are word aligned).
// matmul_<w>_f32_texel (TEXEL): the same with w and x read as 16-byte texels (uniform texel buffers, which
// lavapipe loads like vectors): x as RGBA32F (4 k per fetch), f32 w as RGBA32F, f16 w as RGBA32UI (8 k per
// fetch, unpacked in the shader). Needs K, k0, k1 and the element offsets of w and x to be multiples of 4 (f32)
// or 8 (f16).
// Split-K as in matmul_vec: [k0, k1) per dispatch, `accumulate` adds to out. Loop count per invocation:
// k1 - k0 (f32), (k1 - k0) / 2 (aligned f16), (k1 - k0) / 4 or / 8 (texel); the host keeps it under lavapipe's
// limit.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint RN = 4;  // weight rows per invocation
layout(constant_id = 2) const uint MC = 1;  // activation rows per chunk, 1..8

#if defined(TEXEL) && defined(W_F16)
layout(binding = 0) uniform usamplerBuffer w8;  // RGBA32UI: 8 f16 weights per texel
layout(binding = 1) uniform samplerBuffer x4;   // 4 activations per texel
#elif defined(TEXEL)
layout(binding = 0) uniform samplerBuffer w4;  // RGBA32F: 4 weights per texel
layout(binding = 1) uniform samplerBuffer x4;  // 4 activations per texel
#elif defined(W_F16)
layout(std430, binding = 0) readonly buffer W { uint w[]; };
#else
layout(std430, binding = 0) readonly buffer W { float w[]; };
#endif
#if !defined(TEXEL)
layout(std430, binding = 1) readonly buffer X { float x[]; };
#endif
layout(std430, binding = 2) buffer O { float o[]; };

layout(push_constant) uniform params {
    uint k, n, m;
    uint w_off, x_off, o_off;
    uint k0, k1;
    uint accumulate;
    uint ldo;  // out row stride
    uint m0;   // first activation row of this dispatch
} pc;

void main() {
    const uint row0 = (group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * RN;
    if (row0 >= pc.n) return;
    const uint m0 = pc.m0 + gl_WorkGroupID.z * MC;
    const uint xb = pc.x_off + m0 * pc.k;
    // Rows past the end repeat the last row (valid loads, never stored).
    uint wr[RN];
    [[unroll]] for (uint r = 0u; r < RN; ++r) wr[r] = pc.w_off + min(row0 + r, pc.n - 1u) * pc.k;
    float acc[RN * MC];
    [[unroll]] for (uint i = 0u; i < RN * MC; ++i) acc[i] = 0.0;

#if defined(TEXEL) && defined(W_F16)
    const uint kq = pc.k / 4u, xq = xb / 4u;
    for (uint q = pc.k0 / 8u; q < pc.k1 / 8u; ++q) {
        vec4 xa[MC], xc[MC];
        [[unroll]] for (uint j = 0u; j < MC; ++j) {
            xa[j] = texelFetch(x4, int(xq + j * kq + 2u * q));
            xc[j] = texelFetch(x4, int(xq + j * kq + 2u * q + 1u));
        }
        [[unroll]] for (uint r = 0u; r < RN; ++r) {
            const uvec4 h = texelFetch(w8, int(wr[r] / 8u + q));
            const vec4 wa = vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
            const vec4 wc = vec4(unpackHalf2x16(h.z), unpackHalf2x16(h.w));
            [[unroll]] for (uint j = 0u; j < MC; ++j) acc[r * MC + j] += dot(wa, xa[j]) + dot(wc, xc[j]);
        }
    }
#elif defined(TEXEL)
    const uint kq = pc.k / 4u, xq = xb / 4u;
    for (uint q = pc.k0 / 4u; q < pc.k1 / 4u; ++q) {
        vec4 xv[MC];
        [[unroll]] for (uint j = 0u; j < MC; ++j) xv[j] = texelFetch(x4, int(xq + j * kq + q));
        [[unroll]] for (uint r = 0u; r < RN; ++r) {
            const vec4 wv = texelFetch(w4, int(wr[r] / 4u + q));
            [[unroll]] for (uint j = 0u; j < MC; ++j) acc[r * MC + j] += dot(wv, xv[j]);
        }
    }
#elif defined(W_F16)
    if (((pc.w_off | pc.k | pc.k0) & 1u) == 0u) {
        // Word-aligned rows: two weights per load.
        for (uint kk = pc.k0; kk + 1u < pc.k1; kk += 2u) {
            float x0[MC], x1[MC];
            [[unroll]] for (uint j = 0u; j < MC; ++j) {
                x0[j] = x[xb + j * pc.k + kk];
                x1[j] = x[xb + j * pc.k + kk + 1u];
            }
            [[unroll]] for (uint r = 0u; r < RN; ++r) {
                const vec2 wv = unpackHalf2x16(w[(wr[r] + kk) >> 1u]);
                [[unroll]] for (uint j = 0u; j < MC; ++j) acc[r * MC + j] += wv.x * x0[j] + wv.y * x1[j];
            }
        }
        if (((pc.k1 - pc.k0) & 1u) != 0u) {
            const uint kk = pc.k1 - 1u;
            [[unroll]] for (uint r = 0u; r < RN; ++r) {
                const float wv = LOAD_F16(w, wr[r] + kk);
                [[unroll]] for (uint j = 0u; j < MC; ++j) acc[r * MC + j] += wv * x[xb + j * pc.k + kk];
            }
        }
    } else {
        for (uint kk = pc.k0; kk < pc.k1; ++kk) {
            float xv[MC];
            [[unroll]] for (uint j = 0u; j < MC; ++j) xv[j] = x[xb + j * pc.k + kk];
            [[unroll]] for (uint r = 0u; r < RN; ++r) {
                const float wv = LOAD_F16(w, wr[r] + kk);
                [[unroll]] for (uint j = 0u; j < MC; ++j) acc[r * MC + j] += wv * xv[j];
            }
        }
    }
#else
    for (uint kk = pc.k0; kk < pc.k1; ++kk) {
        float xv[MC];
        [[unroll]] for (uint j = 0u; j < MC; ++j) xv[j] = x[xb + j * pc.k + kk];
        [[unroll]] for (uint r = 0u; r < RN; ++r) {
            const float wv = w[wr[r] + kk];
            [[unroll]] for (uint j = 0u; j < MC; ++j) acc[r * MC + j] += wv * xv[j];
        }
    }
#endif

    [[unroll]] for (uint r = 0u; r < RN; ++r) {
        if (row0 + r < pc.n) {
            [[unroll]] for (uint j = 0u; j < MC; ++j) {
                const uint oi = pc.o_off + (m0 + j) * pc.ldo + row0 + r;
                o[oi] = (pc.accumulate != 0u ? o[oi] : 0.0) + acc[r * MC + j];
            }
        }
    }
}
