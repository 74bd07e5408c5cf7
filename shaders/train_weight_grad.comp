// weight_grad_f32_f32: the backward of matmul to its weight, dw[n][k] = beta * dw[n][k] + alpha * sum_m dy[m][n] *
// x[m][k] (dy {N, M}, x {K, M}, dw {K, N}). Each invocation owns a 4 x 8 tile of dw (4 rows n, 8 columns k; tiles
// numbered with k fastest, so neighbouring invocations read neighbouring x) and walks the activation rows m of its
// range: 4 loads of dy and 8 of x serve 32 products, all in registers. Register tiles without shared memory are the
// form that suits lavapipe (work-groups run as SIMD loops: barriers and shared-memory staging only cost there) and
// are correct on any device; a shared-memory tiled variant for discrete GPUs is not written yet.
// Long M goes in ranges [m0, m1) dispatched in order: the first applies beta (beta = 0: dw is not read, even NaN),
// the later ones use beta = 1. The loop count per invocation is m1 - m0, which the host keeps under lavapipe's
// 65,535-iteration limit.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
#define TN 4u
#define TK 8u

layout(std430, binding = 0) readonly buffer DY { float dy[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) buffer DW { float dw[]; };

layout(push_constant) uniform params {
    uint k, n;
    uint dy_off, x_off, dw_off;
    uint m0, m1;
    float alpha, beta;
} pc;

void main() {
    const uint t = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    const uint tiles_k = (pc.k + TK - 1u) / TK;
    const uint nb = (t / tiles_k) * TN, kb = (t % tiles_k) * TK;
    if (nb >= pc.n) return;
    // Rows and columns past the edge repeat the last one (valid loads, never stored).
    uint cn[TN], ck[TK];
    [[unroll]] for (uint i = 0u; i < TN; ++i) cn[i] = min(nb + i, pc.n - 1u);
    [[unroll]] for (uint e = 0u; e < TK; ++e) ck[e] = min(kb + e, pc.k - 1u);
    float acc[TN][TK];
    [[unroll]] for (uint i = 0u; i < TN; ++i)
        [[unroll]] for (uint e = 0u; e < TK; ++e) acc[i][e] = 0.0;

    for (uint m = pc.m0; m < pc.m1; ++m) {
        float g[TN], xv[TK];
        [[unroll]] for (uint i = 0u; i < TN; ++i) g[i] = dy[pc.dy_off + m * pc.n + cn[i]];
        [[unroll]] for (uint e = 0u; e < TK; ++e) xv[e] = x[pc.x_off + m * pc.k + ck[e]];
        [[unroll]] for (uint i = 0u; i < TN; ++i)
            [[unroll]] for (uint e = 0u; e < TK; ++e) acc[i][e] += g[i] * xv[e];
    }

    [[unroll]] for (uint i = 0u; i < TN; ++i) {
        if (nb + i >= pc.n) break;
        [[unroll]] for (uint e = 0u; e < TK; ++e) {
            if (kb + e >= pc.k) break;
            const uint oi = pc.dw_off + (nb + i) * pc.k + kb + e;
            const float old = pc.beta != 0.0 ? pc.beta * dw[oi] : 0.0;
            dw[oi] = old + pc.alpha * acc[i][e];
        }
    }
}
