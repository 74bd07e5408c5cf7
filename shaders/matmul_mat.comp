// matmul_<w>_f32_tiled: the matrix-matrix path of GPUs (M > 8): out[m][n] = sum_k w[n][k] x[m][k].
// A work-group computes a BM x BN tile of out with (BM/4) x (BN/4) invocations of 4 x 4 outputs each, staging
// BK-wide slices of x and w in shared memory (transposed so the inner product reads rows). Out-of-range rows
// and columns load zeros. Split-K as in matmul_vec: [k0, k1) per dispatch, `accumulate` adds to out.
// Loop count per invocation: (k1 - k0) / BK iterations of the k loop; all inner loops are unrolled.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(local_size_x_id = 0) in;  // (BM / 4) * (BN / 4)
#define BK 16u
#define TM 4u
#define TN 4u

#if defined(W_F16)
layout(std430, binding = 0) readonly buffer W { uint w[]; };
#else
layout(std430, binding = 0) readonly buffer W { float w[]; };
#endif
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) buffer O { float o[]; };

layout(push_constant) uniform params {
    uint k, n, m;
    uint w_off, x_off, o_off;
    uint k0, k1;
    uint accumulate;
    uint ldo;  // out row stride (the full N when the weight rows come in chunks)
} pc;

shared float xs[BK][BM + 1u];
shared float ws[BK][BN + 1u];

void main() {
    const uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint tx = tid % (BN / TN), ty = tid / (BN / TN);
    const uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
    float acc[TM][TN];
    [[unroll]] for (uint i = 0u; i < TM; ++i)
        [[unroll]] for (uint j = 0u; j < TN; ++j) acc[i][j] = 0.0;

    for (uint kb = pc.k0; kb < pc.k1; kb += BK) {
        // Stage x[m0 .. m0+BM)[kb .. kb+BK) and w[n0 .. n0+BN)[kb .. kb+BK): BK consecutive k per row.
        [[unroll]] for (uint s = 0u; s < (BM * BK + wg - 1u) / wg; ++s) {
            const uint e = tid + s * wg;
            if (e < BM * BK) {
                const uint r = e / BK, c = e % BK;
                const uint gm = m0 + r, gk = kb + c;
                xs[c][r] = (gm < pc.m && gk < pc.k1) ? x[pc.x_off + gm * pc.k + gk] : 0.0;
            }
        }
        [[unroll]] for (uint s = 0u; s < (BN * BK + wg - 1u) / wg; ++s) {
            const uint e = tid + s * wg;
            if (e < BN * BK) {
                const uint r = e / BK, c = e % BK;
                const uint gn = n0 + r, gk = kb + c;
                float v = 0.0;
                if (gn < pc.n && gk < pc.k1) {
#if defined(W_F16)
                    v = LOAD_F16(w, pc.w_off + gn * pc.k + gk);
#else
                    v = w[pc.w_off + gn * pc.k + gk];
#endif
                }
                ws[c][r] = v;
            }
        }
        barrier();
        [[unroll]] for (uint c = 0u; c < BK; ++c) {
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
