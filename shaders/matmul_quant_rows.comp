// matmul_<q>_f32_rows and matmul_<q>_f32_texel: out[m][n] = sum_k w[n][k] x[m][k] with Q8_0 / Q4_0 weights
// (blocks read in place, shaders/include/quant.glsl) for CPU-like devices: every invocation computes RN output
// rows for a chunk of MC activation rows (work-group z), looping over k on its own: no shared memory, no
// barriers (on lavapipe a work-group is a SIMD loop, and its cost is the number of loads per product).
// Inner loop: one 32-weight block of each of the RN rows per step. Its words are loaded and split into the
// scale and the quant words once; then 8 weights at a time are widened to floats and dotted with 8 activations
// of each of the MC rows, and each row's block sum is scaled once. So one decode serves MC activation rows
// and one activation load RN weight rows.
//   *_rows:  weights as 32-bit storage words (9 loads per Q8_0 block, 5 per Q4_0), activations as floats.
//   *_texel: weights as RGBA32UI texels and activations as RGBA32F texels (lavapipe loads a texel like a vector
//            but storage words lane by lane: measured 3.4x faster). A block is cut from the 3 (Q8_0) or 2 (Q4_0)
//            texels covering it. With GROUPED = 1 (K % 256 == 0) every weight row is a whole number of texels
//            and blocks come in groups of 8 (8 * 34 and 8 * 18 bytes are multiples of 16) in which block jj
//            starts R0 + jj * bytes into the group's first texel, R0 being the byte offset of the weights in
//            their first texel: with both specialization constants the cut is a fixed selection of words.
//            With GROUPED = 0 the offset inside the texels is known at run time only: two rounds of selects.
// Split-K as in matmul_rows.comp: [k0, k1) per dispatch (multiples of 32, of 256 when GROUPED), `accumulate`
// adds to out. Loop count per invocation: (k1 - k0) / 32, or / 256 when GROUPED; the host keeps it under
// lavapipe's limit.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint RN = 4;       // weight rows per invocation
layout(constant_id = 2) const uint MC = 1;       // activation rows per chunk, 1..8
layout(constant_id = 3) const uint GROUPED = 0;  // *_texel: 1 when K % 256 == 0 (then R0 applies)
layout(constant_id = 4) const uint R0 = 0;       // *_texel, GROUPED: byte offset of the weights in their texel

#if defined(TEXEL)
layout(binding = 0) uniform usamplerBuffer w16;  // RGBA32UI: 16 bytes of blocks per texel
layout(binding = 1) uniform samplerBuffer x4;    // RGBA32F: 4 activations per texel
#else
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
#define QW(i) w[i]
#endif
layout(std430, binding = 2) buffer O { float o[]; };
#include "quant.glsl"

#if defined(Q4_0)
#define BB Q4_0_BYTES  // bytes per block
#define NW 4u          // quant words per block
#define NV 5u          // words covering a block
#define NT 2u          // texels covering a block
#else
#define BB Q8_0_BYTES
#define NW 8u
#define NV 9u
#define NT 3u
#endif

layout(push_constant) uniform params {
    uint k, n, m;
    uint w_off;  // bytes
    uint x_off, o_off;
    uint k0, k1;
    uint accumulate;
    uint ldo;  // out row stride
    uint m0;   // first activation row of this dispatch
} pc;

float acc[RN * MC];  // out[m0 + j][row0 + r] in acc[r * MC + j]
float d[RN];         // the current block of each weight row: scale
uint q[RN * NW];     // and quant words
uint xb;             // first activation of this chunk

// The scale and the quant words of a block from the NV words covering it.
void decode(const uint v[NV], bool odd, out float d, out uint q[NW]) {
#if defined(Q4_0)
    q4_0_decode(v, odd, d, q);
#else
    q8_0_decode(v, odd, d, q);
#endif
}

#if defined(TEXEL)
// The NT texels from texel t, as words.
void fetch(uint t, out uint win[NT * 4u]) {
    [[unroll]] for (uint i = 0u; i < NT; ++i) {
        const uvec4 v = texelFetch(w16, int(t + i));
        win[4u * i] = v.x, win[4u * i + 1u] = v.y, win[4u * i + 2u] = v.z, win[4u * i + 3u] = v.w;
    }
}
#endif

// acc += block blk of the RN weight rows (d, q) times the MC activation rows.
void madd_block(uint blk) {
    float bs[RN * MC];
    [[unroll]] for (uint i = 0u; i < RN * MC; ++i) bs[i] = 0.0;
    // 8 weights (elements 8h .. 8h+7 of the block) per step.
    [[unroll]] for (uint h = 0u; h < 4u; ++h) {
        vec4 xa[MC], xc[MC];
        [[unroll]] for (uint j = 0u; j < MC; ++j) {
#if defined(TEXEL)
            const uint t = (xb + j * pc.k) / 4u + blk * 8u + 2u * h;
            xa[j] = texelFetch(x4, int(t));
            xc[j] = texelFetch(x4, int(t + 1u));
#else
            const uint e = xb + j * pc.k + blk * QK + 8u * h;
            xa[j] = vec4(x[e], x[e + 1u], x[e + 2u], x[e + 3u]);
            xc[j] = vec4(x[e + 4u], x[e + 5u], x[e + 6u], x[e + 7u]);
#endif
        }
        [[unroll]] for (uint r = 0u; r < RN; ++r) {
#if defined(Q4_0)
            // Elements 0..15 are the low nibbles of quant words 0..3, elements 16..31 the high ones.
            const uint wa = q[r * NW + 2u * (h & 1u)], wc = q[r * NW + 2u * (h & 1u) + 1u];
            const vec4 fa = h < 2u ? lo4(wa) : hi4(wa), fc = h < 2u ? lo4(wc) : hi4(wc);
#else
            const vec4 fa = i8x4(q[r * NW + 2u * h]), fc = i8x4(q[r * NW + 2u * h + 1u]);
#endif
            [[unroll]] for (uint j = 0u; j < MC; ++j) bs[r * MC + j] += dot(fa, xa[j]) + dot(fc, xc[j]);
        }
    }
    [[unroll]] for (uint r = 0u; r < RN; ++r)
        [[unroll]] for (uint j = 0u; j < MC; ++j) acc[r * MC + j] += d[r] * bs[r * MC + j];
}

void main() {
    const uint row0 = (group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * RN;
    if (row0 >= pc.n) return;
    xb = pc.x_off + (pc.m0 + gl_WorkGroupID.z * MC) * pc.k;
    const uint rb = pc.k / QK * BB;  // bytes per weight row
    // Rows past the end repeat the last row (valid loads, never stored).
    uint wr[RN];
    [[unroll]] for (uint r = 0u; r < RN; ++r) wr[r] = pc.w_off + min(row0 + r, pc.n - 1u) * rb;
    [[unroll]] for (uint i = 0u; i < RN * MC; ++i) acc[i] = 0.0;

#if defined(TEXEL)
    if (GROUPED != 0u) {
        for (uint g = pc.k0 / 256u; g < pc.k1 / 256u; ++g) {
            [[unroll]] for (uint jj = 0u; jj < 8u; ++jj) {
                const uint ob = R0 + jj * BB;  // byte of the block from the group's first texel: a constant
                [[unroll]] for (uint r = 0u; r < RN; ++r) {
                    uint win[NT * 4u], v[NV], qr[NW];
                    // wr[r] - R0 is a whole number of texels; a group is 8 * BB / 16 texels.
                    fetch((wr[r] - R0) / 16u + g * (BB / 2u) + ob / 16u, win);
                    [[unroll]] for (uint j = 0u; j < NV; ++j) v[j] = win[(ob % 16u) / 4u + j];
                    decode(v, (ob & 2u) != 0u, d[r], qr);
                    [[unroll]] for (uint j = 0u; j < NW; ++j) q[r * NW + j] = qr[j];
                }
                madd_block(g * 8u + jj);
            }
        }
    } else {
        for (uint blk = pc.k0 / QK; blk < pc.k1 / QK; ++blk) {
            [[unroll]] for (uint r = 0u; r < RN; ++r) {
                const uint b = wr[r] + blk * BB;
                uint win[NT * 4u], u[NT * 4u - 1u], v[NV], qr[NW];
                fetch(b / 16u, win);
                // Words s .. s + NV - 1 of the window, s = (b % 16) / 4: shift by s & 1, then by s & 2.
                const uint s = (b % 16u) / 4u;
                [[unroll]] for (uint i = 0u; i + 1u < NT * 4u; ++i) u[i] = (s & 1u) != 0u ? win[i + 1u] : win[i];
                [[unroll]] for (uint j = 0u; j < NV; ++j) v[j] = (s & 2u) != 0u ? u[j + 2u] : u[j];
                decode(v, (b & 2u) != 0u, d[r], qr);
                [[unroll]] for (uint j = 0u; j < NW; ++j) q[r * NW + j] = qr[j];
            }
            madd_block(blk);
        }
    }
#else
    for (uint blk = pc.k0 / QK; blk < pc.k1 / QK; ++blk) {
        [[unroll]] for (uint r = 0u; r < RN; ++r) {
            uint qr[NW];
#if defined(Q4_0)
            q4_0_load(wr[r] + blk * BB, d[r], qr);
#else
            q8_0_load(wr[r] + blk * BB, d[r], qr);
#endif
            [[unroll]] for (uint j = 0u; j < NW; ++j) q[r * NW + j] = qr[j];
        }
        madd_block(blk);
    }
#endif

    const uint m0 = pc.m0 + gl_WorkGroupID.z * MC;
    [[unroll]] for (uint r = 0u; r < RN; ++r) {
        if (row0 + r < pc.n) {
            [[unroll]] for (uint j = 0u; j < MC; ++j) {
                const uint oi = pc.o_off + (m0 + j) * pc.ldo + row0 + r;
                o[oi] = (pc.accumulate != 0u ? o[oi] : 0.0) + acc[r * MC + j];
            }
        }
    }
}
