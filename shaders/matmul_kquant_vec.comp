// matmul_<q>_f32 for Q4_K / Q6_K weights: the matrix-vector path of GPUs (M <= 8), super-blocks read in place
// (shaders/include/kquant.glsl has the bit layouts and the 64-weight unit): out[m][n] = sum_k w[n][k] x[m][k] for
// a chunk of MC activation rows. A work-group computes WG / TPR output rows; the TPR invocations of a row take every
// TPR-th 64-weight unit (4 per super-block, so neighbouring invocations read neighbouring 32-byte stretches of the
// same block), then sum their partial results in shared memory.
// Inner loop: per unit, 12 (Q4_K) or 15 (Q6_K) word loads give the scales and the quant words; for each of the MC
// activation rows the unit's 64 activations are loaded as 16 vec4, the integer quants widened 4 at a time and
// dotted with them, and the scales applied once per 32 (Q4_K) or 16 (Q6_K) weights. Split-K as in
// matmul_quant_vec.comp: [k0, k1) per dispatch (multiples of 256), `accumulate` adds to out.
// Loop count per invocation: (k1 - k0) / (64 TPR).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;               // WG, a power of two
layout(constant_id = 1) const uint TPR = 32;  // invocations per output row, a power of two dividing WG
layout(constant_id = 2) const uint MC = 1;    // activation rows per chunk, 1..8

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
    uint m0;   // first activation row of this dispatch
} pc;

shared float red[MC][gl_WorkGroupSize.x];

vec4 x4(uint e) { return vec4(x[e], x[e + 1u], x[e + 2u], x[e + 3u]); }

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint lane = tid % TPR;
    const uint row = group_index() * (gl_WorkGroupSize.x / TPR) + tid / TPR;
    float acc[MC];
    [[unroll]] for (uint j = 0u; j < MC; ++j) acc[j] = 0.0;

    const uint m0 = pc.m0 + gl_WorkGroupID.z * MC;
    if (row < pc.n) {
        const uint xb = pc.x_off + m0 * pc.k;
        const uint wr = pc.w_off + row * (pc.k / QK_K * KQ_BYTES);
        for (uint u = pc.k0 / 64u + lane; u < pc.k1 / 64u; u += TPR) {
            const uint sb = u / 4u, uu = u % 4u;
            vec4 coef;
            uint q[NQ];
            kq_load(wr + sb * KQ_BYTES, uu, coef, q);
            [[unroll]] for (uint j = 0u; j < MC; ++j) {
                const uint e = xb + j * pc.k + sb * QK_K;
                vec4 xv[16];
                [[unroll]] for (uint s = 0u; s < 16u; ++s) xv[s] = x4(e + kq_x_at(uu, s));
                acc[j] += kq_dot(coef, q, xv, kq_xsum(xv));
            }
        }
    }

    [[unroll]] for (uint j = 0u; j < MC; ++j) red[j][tid] = acc[j];
    barrier();
    for (uint s = TPR / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            [[unroll]] for (uint j = 0u; j < MC; ++j) red[j][tid] += red[j][tid + s];
        }
        barrier();
    }
    if (lane == 0u && row < pc.n) {
        [[unroll]] for (uint j = 0u; j < MC; ++j) {
            const uint oi = pc.o_off + (m0 + j) * pc.ldo + row;
            o[oi] = (pc.accumulate != 0u ? o[oi] : 0.0) + red[j][tid];
        }
    }
}
