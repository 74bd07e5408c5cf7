// matmul_<q>_f32_tiled for Q4_K / Q6_K weights: the matrix-matrix path of GPUs (M > 8), super-blocks read in place
// (shaders/include/kquant.glsl has the bit layouts): out[m][n] = sum_k w[n][k] x[m][k].
// A work-group computes a BM x BN tile of out with (BM/4) x (BN/4) invocations of 4 x 4 outputs each, as
// matmul_quant_mat.comp does for Q8_0 / Q4_0. Per step along k it stages one 32-weight slice: x[m0 .. m0+BM) as is,
// and the slice of each of the BN weight rows decoded to f32 in shared memory (each invocation decodes 8 weights:
// Q4_K one sub-block's d * sc and dmin * m and 8 nibbles, Q6_K one 16-weight group's d * sc and 8 quants from
// ql / qh, all exact in f32), so every weight is decoded once per tile and read by BM / 4 invocations. The inner
// product then reads shared memory only. Out-of-range rows load zeros.
// Split-K: [k0, k1) per dispatch (multiples of 256), `accumulate` adds to out.
// Loop count per invocation: (k1 - k0) / 32 iterations of the k loop; all inner loops are unrolled.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(local_size_x_id = 0) in;  // (BM / 4) * (BN / 4)
#define TM 4u
#define TN 4u

layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) buffer O { float o[]; };
#define QW(i) w[i]
#include "quant.glsl"
#include "kquant.glsl"

layout(push_constant) uniform params {
    uint k, n, m;
    uint w_off;  // bytes
    uint x_off, o_off;
    uint k0, k1;
    uint accumulate;
    uint ldo;  // out row stride (the full N when the weight rows come in chunks)
} pc;

shared float xs[QK][BM + 1u];
shared float ws[QK][BN + 1u];

void main() {
    const uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint tx = tid % (BN / TN), ty = tid / (BN / TN);
    const uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
    const uint rb = pc.k / QK_K * KQ_BYTES;
    float acc[TM][TN];
    [[unroll]] for (uint i = 0u; i < TM; ++i)
        [[unroll]] for (uint j = 0u; j < TN; ++j) acc[i][j] = 0.0;

    for (uint blk = pc.k0 / QK; blk < pc.k1 / QK; ++blk) {  // 32-weight slices: 8 per super-block
        const uint kb = blk * QK;
        [[unroll]] for (uint s = 0u; s < (BM * QK + wg - 1u) / wg; ++s) {
            const uint e = tid + s * wg;
            if (e < BM * QK) {
                const uint r = e / QK, c = e % QK, gm = m0 + r;
                xs[c][r] = gm < pc.m ? x[pc.x_off + gm * pc.k + kb + c] : 0.0;
            }
        }
        // BN slices as 4 parts of 8 weights each.
        [[unroll]] for (uint s = 0u; s < (BN * 4u + wg - 1u) / wg; ++s) {
            const uint e = tid + s * wg;
            if (e < BN * 4u) {
                const uint r = e / 4u, p = e % 4u, gn = n0 + r;
                vec4 a = vec4(0.0), b = vec4(0.0);
                if (gn < pc.n) {
                    const uint b0 = pc.w_off + gn * rb + (blk / 8u) * KQ_BYTES;
#if defined(Q6_K)
                    q6_k_dec8(b0, blk % 8u, p, a, b);
#else
                    q4_k_dec8(b0, blk % 8u, p, a, b);
#endif
                }
                [[unroll]] for (uint i = 0u; i < 4u; ++i) {
                    ws[8u * p + i][r] = a[i];
                    ws[8u * p + 4u + i][r] = b[i];
                }
            }
        }
        barrier();
        [[unroll]] for (uint c = 0u; c < QK; ++c) {
            float xv[TM], wv[TN];
            [[unroll]] for (uint i = 0u; i < TM; ++i) xv[i] = xs[c][ty * TM + i];
            [[unroll]] for (uint j = 0u; j < TN; ++j) wv[j] = ws[c][tx * TN + j];
            [[unroll]] for (uint i = 0u; i < TM; ++i)
                [[unroll]] for (uint j = 0u; j < TN; ++j) acc[i][j] += xv[i] * wv[j];
        }
        barrier();
    }

    [[unroll]] for (uint i = 0u; i < TM; ++i) {
        const uint gm = m0 + ty * TM + i;
        [[unroll]] for (uint j = 0u; j < TN; ++j) {
            const uint gn = n0 + tx * TN + j;
            if (gm < pc.m && gn < pc.n) {
                const uint oi = pc.o_off + gm * pc.ldo + gn;
                o[oi] = (pc.accumulate != 0u ? o[oi] : 0.0) + acc[i][j];
            }
        }
    }
}
