// matmul_t_<w>_f32: the backward of matmul to its input, dx[m][k] = sum_n w[n][k] * dy[m][n], with the frozen
// weight read in its own format (f32, f16 (W_F16), Q8_0, Q4_0, Q4_K, Q6_K: blocks decoded in place by
// shaders/include/quant.glsl and kquant.glsl; no dequantized copy of w exists). Each invocation owns 8 columns k of
// dx for a chunk of MC activation rows (work-group z) and walks the weight rows n of its range: per row, the
// scale(s) and one or two words of quants (or 8 weights) and MC values of dy serve 8 * MC products, all in
// registers (no shared memory, no barriers: the form that suits lavapipe, where loads are per-lane loops, and is
// correct anywhere).
// The 8 columns: f32/f16: k0 .. k0 + 7 (fewer at the end of a row); Q8_0: quants 8s .. 8s + 7 of block b (four
// invocations per block); Q4_0: the low nibbles 4s .. 4s + 3 and the high nibbles 4s + 16 .. 4s + 19 of quant word s;
// Q4_K / Q6_K: elements 8s .. 8s + 7 of the 256-weight super-block (32 invocations per super-block).
// Long N goes in ranges [n0, n1) dispatched in order, `accumulate` adding to dx: the loop count per invocation is
// n1 - n0, which the host keeps under lavapipe's 65,535-iteration limit.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MC = 1;  // activation rows per chunk, 1..8

#if defined(W_F32)
layout(std430, binding = 0) readonly buffer W { float w[]; };
#else
layout(std430, binding = 0) readonly buffer W { uint w[]; };
#endif
layout(std430, binding = 1) readonly buffer DY { float dy[]; };
layout(std430, binding = 2) buffer DX { float dx[]; };
#if !defined(W_F32) && !defined(W_F16)
#define QW(i) w[i]
#endif
#include "quant.glsl"
#if defined(Q4_K) || defined(Q6_K)
#include "kquant.glsl"
#endif

layout(push_constant) uniform params {
    uint k;        // columns of w and dx
    uint n;        // rows of w (dy's row length)
    uint w_off;    // elements (f32, f16) or bytes (Q8_0, Q4_0) of row n_base in the binding
    uint dy_off, dx_off;
    uint n_base;   // the weight row at w_off
    uint n0, n1;   // weight rows of this dispatch, relative to n_base
    uint accumulate;
    uint m0;       // first activation row of this dispatch
} pc;

void main() {
    const uint grp = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
#if defined(W_F32) || defined(W_F16)
    const uint kb = grp * 8u;
    if (kb >= pc.k) return;
    const uint last = pc.k - 1u;
#else
    const uint kb = grp * 8u;  // block grp / 4, sub-group grp % 4
    if (kb >= pc.k) return;
#if defined(Q4_K) || defined(Q6_K)
    const uint blk = grp / 32u, sub = grp % 32u;  // elements 8 sub .. 8 sub + 7 of super-block blk
    const uint row_bytes = pc.k / QK_K * KQ_BYTES, blk_bytes = KQ_BYTES;
#else
    const uint blk = grp / 4u, sub = grp % 4u;
#endif
#if defined(Q4_K) || defined(Q6_K)
#elif defined(Q4_0)
    const uint row_bytes = pc.k / QK * Q4_0_BYTES, blk_bytes = Q4_0_BYTES;
#else
    const uint row_bytes = pc.k / QK * Q8_0_BYTES, blk_bytes = Q8_0_BYTES;
#endif
#endif
    const uint m0 = pc.m0 + gl_WorkGroupID.z * MC;
    float acc[MC][8];
    [[unroll]] for (uint j = 0u; j < MC; ++j)
        [[unroll]] for (uint e = 0u; e < 8u; ++e) acc[j][e] = 0.0;

    for (uint n = pc.n0; n < pc.n1; ++n) {
        float wv[8];
#if defined(W_F32)
        // Columns past the end of the row repeat the last one (valid loads, never stored).
        const uint wr = pc.w_off + n * pc.k;
        [[unroll]] for (uint e = 0u; e < 8u; ++e) wv[e] = w[wr + min(kb + e, last)];
#elif defined(W_F16)
        const uint wr = pc.w_off + n * pc.k;
        [[unroll]] for (uint e = 0u; e < 8u; ++e) wv[e] = LOAD_F16(w, wr + min(kb + e, last));
#else
        const uint b = pc.w_off + n * row_bytes + blk * blk_bytes;
#if defined(Q4_K) || defined(Q6_K)
        vec4 lo, hi;
#if defined(Q4_K)
        q4_k_dec8(b, sub / 4u, sub % 4u, lo, hi);
#else
        q6_k_dec8(b, sub / 4u, sub % 4u, lo, hi);
#endif
        [[unroll]] for (uint e = 0u; e < 4u; ++e) {
            wv[e] = lo[e];
            wv[e + 4u] = hi[e];
        }
#elif defined(Q4_0)
        const float d = q_scale(b);
        const vec4 lo = lo4(q_bytes4(b + 2u + 4u * sub)) * d, hi = hi4(q_bytes4(b + 2u + 4u * sub)) * d;
        [[unroll]] for (uint e = 0u; e < 4u; ++e) {
            wv[e] = lo[e];
            wv[e + 4u] = hi[e];
        }
#else
        const float d = q_scale(b);
        const vec4 a = i8x4(q_bytes4(b + 2u + 8u * sub)) * d, c = i8x4(q_bytes4(b + 6u + 8u * sub)) * d;
        [[unroll]] for (uint e = 0u; e < 4u; ++e) {
            wv[e] = a[e];
            wv[e + 4u] = c[e];
        }
#endif
#endif
        [[unroll]] for (uint j = 0u; j < MC; ++j) {
            const float g = dy[pc.dy_off + (m0 + j) * pc.n + pc.n_base + n];
            [[unroll]] for (uint e = 0u; e < 8u; ++e) acc[j][e] += wv[e] * g;
        }
    }

    [[unroll]] for (uint e = 0u; e < 8u; ++e) {
#if defined(W_F32) || defined(W_F16)
        if (kb + e >= pc.k) break;
        const uint col = kb + e;
#elif defined(Q4_K) || defined(Q6_K)
        const uint col = blk * QK_K + 8u * sub + e;
#elif defined(Q4_0)
        const uint col = blk * QK + 4u * sub + (e < 4u ? e : e + 12u);
#else
        const uint col = blk * QK + 8u * sub + e;
#endif
        [[unroll]] for (uint j = 0u; j < MC; ++j) {
            const uint oi = pc.dx_off + (m0 + j) * pc.k + col;
            dx[oi] = (pc.accumulate != 0u ? dx[oi] : 0.0) + acc[j][e];
        }
    }
}
