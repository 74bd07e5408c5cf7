// matmul_<w>_f32: the matrix-vector path of GPUs (M <= 8): out[m][n] = sum_k w[n][k] x[m][k] for a chunk of
// MC activation rows (a specialization constant, so the row loops have fixed trip counts).
// A work-group computes WG / TPR output rows; TPR invocations share a row, striding over k, and every
// weight read is used for all rows of the chunk. The lanes of a row are summed in shared memory.
// Split-K: the host may cut [0, K) into ranges [k0, k1) dispatched in order; `accumulate` adds to out.
// Loop count per invocation: (k1 - k0) / TPR (f32) or / (2 TPR) (f16 pairs), kept under lavapipe's limit.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;          // WG, a power of two
layout(constant_id = 1) const uint TPR = 32;  // invocations per output row, a power of two dividing WG
layout(constant_id = 2) const uint MC = 1;    // activation rows per chunk, 1..8

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
    uint m0;   // first activation row of this dispatch
} pc;

shared float red[MC][gl_WorkGroupSize.x];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint lane = tid % TPR;
    const uint row = group_index() * (gl_WorkGroupSize.x / TPR) + tid / TPR;
    float acc[MC];
    [[unroll]] for (uint j = 0u; j < MC; ++j) acc[j] = 0.0;

    const uint m0 = pc.m0 + gl_WorkGroupID.z * MC;
    if (row < pc.n) {
        const uint xb = pc.x_off + m0 * pc.k;
#if defined(W_F16)
        // Halves [e, e + len) of this row; an odd start takes one single half, then whole words.
        uint e = pc.w_off + row * pc.k + pc.k0;
        uint kk = pc.k0;
        if ((e & 1u) != 0u && pc.k1 > pc.k0) {
            if (lane == 0u) {
                const float wv = LOAD_F16(w, e);
                [[unroll]] for (uint j = 0u; j < MC; ++j)
                    acc[j] += wv * x[xb + j * pc.k + kk];
            }
            ++e;
            ++kk;
        }
        const uint pairs = (pc.k1 - kk) / 2u;
        const uint wb = e >> 1u;
        for (uint p = lane; p < pairs; p += TPR) {
            const vec2 wv = unpackHalf2x16(w[wb + p]);
            const uint kx = kk + 2u * p;
            [[unroll]] for (uint j = 0u; j < MC; ++j)
                acc[j] += wv.x * x[xb + j * pc.k + kx] + wv.y * x[xb + j * pc.k + kx + 1u];
        }
        if (((pc.k1 - kk) & 1u) != 0u && lane == 0u) {
            const uint kl = pc.k1 - 1u;
            const float wv = LOAD_F16(w, e + 2u * pairs);
            [[unroll]] for (uint j = 0u; j < MC; ++j)
                acc[j] += wv * x[xb + j * pc.k + kl];
        }
#else
        const uint wr = pc.w_off + row * pc.k;
        for (uint kk = pc.k0 + lane; kk < pc.k1; kk += TPR) {
            const float wv = w[wr + kk];
            [[unroll]] for (uint j = 0u; j < MC; ++j)
                acc[j] += wv * x[xb + j * pc.k + kk];
        }
#endif
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
