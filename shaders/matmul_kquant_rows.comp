// matmul_<q>_f32_rows and matmul_<q>_f32_texel for Q4_K / Q6_K weights (super-blocks read in place; the bit layouts
// and the 64-weight unit are in shaders/include/kquant.glsl): out[m][n] = sum_k w[n][k] x[m][k] for CPU-like
// devices. Every invocation computes RN output rows for a chunk of MC activation rows (work-group z), looping over k
// on its own: no shared memory, no barriers (on lavapipe a work-group is a SIMD loop and its cost is the number of
// loads per product), as matmul_quant_rows.comp does for Q8_0 / Q4_0.
// Inner loop: one 64-weight unit per step (4 per super-block). The unit of each of the RN rows is loaded and split
// into its scales and quant words once; then per activation row its 64 activations are loaded once (16 vec4) and
// dotted with the RN rows' quants, widened 4 at a time. So one decode serves MC activation rows and one activation
// load RN weight rows; the Q4_K sums of x (for the mins) are formed once per activation row and unit.
//   *_rows:  weights as 32-bit storage words (12 loads per Q4_K unit, 15 per Q6_K unit, twice as many for words
//            that straddle), activations as floats.
//   *_texel: activations as RGBA32F texels (16 fetches per unit and row instead of 64 loads; lavapipe loads a texel
//            like a vector but storage words lane by lane). Q4_K weights as RGBA32UI texels: rows are whole texels
//            (144 = 9 x 16 bytes), so every block starts R0 bytes into a texel (R0 = the weights' offset in their
//            first texel, a specialization constant) and a unit is the head texel(s) (d, dmin, scales) and the 2
//            texels of its 32 quant bytes, cut at a constant offset: 3 fetches when R0 = 0, else 6. Q6_K blocks are
//            210 bytes, so their offset inside a texel changes from block to block: each 16-byte run (2 of ql, 1 of
//            qh, the scales) is cut from 2 texels at a run-time offset, plus d's word: 9 fetches.
// Split-K as in matmul_quant_rows.comp: [k0, k1) per dispatch (multiples of 256), `accumulate` adds to out.
// Loop count per invocation: (k1 - k0) / 64; the host keeps it under lavapipe's limit.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint RN = 4;  // weight rows per invocation
layout(constant_id = 2) const uint MC = 1;  // activation rows per chunk, 1..8
layout(constant_id = 3) const uint R0 = 0;  // *_texel, Q4_K: byte offset of the weights in their first texel (even)

#if defined(TEXEL)
layout(binding = 0) uniform usamplerBuffer w16;  // RGBA32UI: 16 bytes of blocks per texel
layout(binding = 1) uniform samplerBuffer x4t;   // RGBA32F: 4 activations per texel
#define QW(i) texelFetch(w16, int((i) >> 2u))[(i) & 3u]
#define X4(e) texelFetch(x4t, int((e) >> 2u))
#else
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
#define QW(i) w[i]
#define X4(e) vec4(x[e], x[(e) + 1u], x[(e) + 2u], x[(e) + 3u])
#endif
layout(std430, binding = 2) buffer O { float o[]; };
#include "quant.glsl"
#include "kquant.glsl"

layout(push_constant) uniform params {
    uint k, n, m;
    uint w_off;  // bytes
    uint x_off, o_off;
    uint k0, k1;
    uint accumulate;
    uint ldo;  // out row stride
    uint m0;   // first activation row of this dispatch
} pc;

#if defined(TEXEL) && defined(Q4_K)
// The 16 bytes starting R0 bytes into texel t.
uvec4 fetch16(uint t) {
    const uvec4 a = texelFetch(w16, int(t));
    if (R0 == 0u) return a;
    const uvec4 b = texelFetch(w16, int(t + 1u));
    const uint win[8] = uint[8](a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
    uvec4 r;
    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
        const uint o = R0 / 4u + j;
        r[j] = (R0 & 2u) != 0u ? (win[o] >> 16u) | (win[o + 1u] << 16u) : win[o];
    }
    return r;
}

// kq_load for the block whose bytes start R0 bytes into texel tb.
void load_unit(uint tb, uint u, out vec4 coef, out uint q[NQ]) {
    const uvec4 head = fetch16(tb), qa = fetch16(tb + 1u + 2u * u), qb = fetch16(tb + 2u + 2u * u);
    const vec2 dd = unpackHalf2x16(head.x);
    const uvec2 a = q4_k_scale_min(head.y, head.z, head.w, 2u * u);
    const uvec2 z = q4_k_scale_min(head.y, head.z, head.w, 2u * u + 1u);
    coef = vec4(dd.x * float(a.x), dd.y * float(a.y), dd.x * float(z.x), dd.y * float(z.y));
    [[unroll]] for (uint j = 0u; j < 4u; ++j) q[j] = qa[j], q[4u + j] = qb[j];
}
#elif defined(TEXEL)
// The 16 bytes at even byte e of the binding: two texel fetches, then the words from (e % 16) / 4 on (two rounds of
// selects) and the half-word shift when e % 4 == 2. The second texel always holds bytes of the same block (the
// runs below end at byte 207 of a block at most, and its d follows).
uvec4 fetch16_at(uint e) {
    const uvec4 a = texelFetch(w16, int(e >> 4u)), c = texelFetch(w16, int((e >> 4u) + 1u));
    const uint w[8] = uint[8](a.x, a.y, a.z, a.w, c.x, c.y, c.z, c.w);
    const uint s = (e & 15u) >> 2u;
    uint t[7], v[5];
    [[unroll]] for (uint i = 0u; i < 7u; ++i) t[i] = (s & 1u) != 0u ? w[i + 1u] : w[i];
    [[unroll]] for (uint i = 0u; i < 5u; ++i) v[i] = (s & 2u) != 0u ? t[i + 2u] : t[i];
    uvec4 r;
    [[unroll]] for (uint j = 0u; j < 4u; ++j) r[j] = (e & 2u) != 0u ? (v[j] >> 16u) | (v[j + 1u] << 16u) : v[j];
    return r;
}

// kq_load for Q6_K through texels: 4 runs of 16 bytes (ql, ql, qh, the scales) and d's word, 9 fetches.
void load_unit(uint b, uint u, out vec4 coef, out uint q[NQ]) {
    const uint h = u >> 1u, r = u & 1u;
    const uvec4 a = fetch16_at(b + 64u * h + 16u * r), c = fetch16_at(b + 64u * h + 32u + 16u * r);
    const uvec4 qh = fetch16_at(b + 128u + 32u * h + 16u * r), sc = fetch16_at(b + 192u);
    const uint dw = texelFetch(w16, int((b + 208u) >> 4u))[((b + 208u) >> 2u) & 3u];
    const float d = (b & 2u) != 0u ? unpackHalf2x16(dw).y : unpackHalf2x16(dw).x;
    const uint s0 = h != 0u ? sc.z : sc.x, s1 = h != 0u ? sc.w : sc.y;  // scale bytes 8h .. 8h + 7
    coef = d * vec4(kq_i8(s0, r), kq_i8(s0, 2u + r), kq_i8(s1, r), kq_i8(s1, 2u + r));
    [[unroll]] for (uint j = 0u; j < 4u; ++j) q[j] = a[j], q[4u + j] = c[j], q[8u + j] = qh[j];
}
#endif

void main() {
    const uint row0 = (group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * RN;
    if (row0 >= pc.n) return;
    const uint xb = pc.x_off + (pc.m0 + gl_WorkGroupID.z * MC) * pc.k;
    const uint rb = pc.k / QK_K * KQ_BYTES;  // bytes per weight row
    // Rows past the end repeat the last row (valid loads, never stored).
    uint wr[RN];
    [[unroll]] for (uint r = 0u; r < RN; ++r) wr[r] = pc.w_off + min(row0 + r, pc.n - 1u) * rb;
    float acc[RN * MC];  // out[m0 + j][row0 + r] in acc[r * MC + j]
    [[unroll]] for (uint i = 0u; i < RN * MC; ++i) acc[i] = 0.0;

    for (uint u = pc.k0 / 64u; u < pc.k1 / 64u; ++u) {
        const uint sb = u / 4u, uu = u % 4u;
        vec4 coef[RN];
        uint q[RN * NQ];
        [[unroll]] for (uint r = 0u; r < RN; ++r) {
            uint qr[NQ];
#if defined(TEXEL) && defined(Q4_K)
            load_unit((wr[r] - R0) / 16u + sb * (Q4_K_BYTES / 16u), uu, coef[r], qr);
#elif defined(TEXEL)
            load_unit(wr[r] + sb * KQ_BYTES, uu, coef[r], qr);
#else
            kq_load(wr[r] + sb * KQ_BYTES, uu, coef[r], qr);
#endif
            [[unroll]] for (uint j = 0u; j < NQ; ++j) q[r * NQ + j] = qr[j];
        }
        [[unroll]] for (uint j = 0u; j < MC; ++j) {
            const uint e = xb + j * pc.k + sb * QK_K;
            vec4 xv[16];
            [[unroll]] for (uint s = 0u; s < 16u; ++s) xv[s] = X4(e + kq_x_at(uu, s));
            const vec2 xs = kq_xsum(xv);
            [[unroll]] for (uint r = 0u; r < RN; ++r) {
                uint qr[NQ];
                [[unroll]] for (uint i = 0u; i < NQ; ++i) qr[i] = q[r * NQ + i];
                acc[r * MC + j] += kq_dot(coef[r], qr, xv, xs);
            }
        }
    }

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
