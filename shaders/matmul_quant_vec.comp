// matmul_<q>_f32: the matrix-vector path of GPUs (M <= 8) for Q8_0 / Q4_0 weights (blocks read in place,
// shaders/include/quant.glsl): out[m][n] = sum_k w[n][k] x[m][k] for a chunk of MC activation rows.
// A work-group computes WG / TPR output rows; the TPR invocations of a row take every TPR-th 32-weight block
// (neighbouring invocations read neighbouring blocks), then sum their partial results in shared memory.
// Inner loop: per block, 9 (Q8_0) or 5 (Q4_0) word loads give the scale and the quant words; the integer
// quants are widened 4 at a time and dotted with the activations of each of the MC rows, and the block's sum
// is scaled once per row. Split-K as in matmul_vec.comp: [k0, k1) per dispatch (multiples of 32),
// `accumulate` adds to out. Loop count per invocation: (k1 - k0) / (32 TPR).
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
#if defined(Q4_0)
        const uint wr = pc.w_off + row * (pc.k / QK * Q4_0_BYTES);
#else
        const uint wr = pc.w_off + row * (pc.k / QK * Q8_0_BYTES);
#endif
        for (uint blk = pc.k0 / QK + lane; blk < pc.k1 / QK; blk += TPR) {
            float d;
#if defined(Q4_0)
            uint q[4];
            q4_0_load(wr + blk * Q4_0_BYTES, d, q);
            [[unroll]] for (uint j = 0u; j < MC; ++j) {
                const uint e = xb + j * pc.k + blk * QK;
                float s = 0.0;
                [[unroll]] for (uint h = 0u; h < 4u; ++h)
                    s += dot(lo4(q[h]), x4(e + 4u * h)) + dot(hi4(q[h]), x4(e + 16u + 4u * h));
                acc[j] += d * s;
            }
#else
            uint q[8];
            q8_0_load(wr + blk * Q8_0_BYTES, d, q);
            [[unroll]] for (uint j = 0u; j < MC; ++j) {
                const uint e = xb + j * pc.k + blk * QK;
                float s = 0.0;
                [[unroll]] for (uint h = 0u; h < 8u; ++h) s += dot(i8x4(q[h]), x4(e + 4u * h));
                acc[j] += d * s;
            }
#endif
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
