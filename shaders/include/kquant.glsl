// GGUF Q4_K / Q6_K super-blocks (256 weights; byte layouts in backends/cpu/dequant.cpp) read in place from 32-bit
// words, for matmul_kquant_{vec,rows,mat}.comp and get_rows.comp. Include after quant.glsl with QW(i) defined, and
// with Q4_K or Q6_K defined for the unit interface (kq_*). Blocks start at any even byte: Q4_K's 144 bytes keep all
// blocks of a tensor at its offset mod 4, Q6_K's 210 bytes alternate between the halves of a word, so words come
// from q_bytes4 (one load on a word boundary, else two). Every decode is exact in f32, as in the reference:
// Q4_K (d * sc) * q - dmin * m and Q6_K (d * sc) * (q - 32) have at most 24 significant bits per product.
// The blocks (little-endian, no padding):
//   Q4_K, 144 bytes: 0..1 d (fp16), 2..3 dmin (fp16), 4..15 the 6-bit scale sc[s] and min m[s] of the 8 sub-blocks
//     of 32 (s < 4: low 6 bits of bytes s and s + 4; s >= 4: low / high nibble of byte s + 4 with the top 2 bits of
//     bytes s - 4 / s as bits 5..4), 16..143 qs: byte 32c + l holds element 64c + l (low nibble) and 64c + 32 + l
//     (high nibble); element = d sc[s] q - dmin m[s].
//   Q6_K, 210 bytes: 0..127 ql (low 4 bits), 128..191 qh (high 2 bits), 192..207 int8 scales of the 16 groups of 16,
//     208..209 d (fp16). Element 128h + 32i + l: low bits = nibble i / 2 of ql[64h + 32 (i & 1) + l], high bits =
//     bits 2i + 1 .. 2i of qh[32h + l]; element = d scales[element / 16] (q - 32).
//
// The matmul unit: 64 weights of one super-block (4 units per super-block), loaded once and dotted with the
// activations of every activation row (16 vec4, xv[s] at super-block offset kq_x_at(unit, s)):
//   Q4_K unit c: sub-blocks 2c and 2c + 1 = qs bytes 32c .. 32c + 31 (8 words; low nibbles are elements 64c + l,
//     high nibbles 64c + 32 + l), with the d/dmin word and the 3 scale words: 12 words for 64 weights.
//     Dot: d sc[2c] sum(q x) - dmin m[2c] sum(x) + the same for 2c + 1 (the sums of x shared by all rows).
//   Q6_K unit u = 2h + r: l = 16r .. 16r + 15 of half h, i.e. elements 128h + 32i + 16r + t (i = 0..3,
//     t = 0..15): ql bytes 64h + 16r + t (i = 0, 2: low, high nibble) and 64h + 32 + 16r + t (i = 1, 3), qh
//     bytes 32h + 16r + t (bits 2i + 1 .. 2i), scales 8h + 2i + r, and d: 4 + 4 + 4 + 2 + 1 = 15 words.
//     Dot: d * sum_i sc[8h + 2i + r] sum(q x).

#define QK_K 256u
#define Q4_K_BYTES 144u
#define Q6_K_BYTES 210u

// The low (shift 0) or high (shift 4) nibbles of the 4 bytes of a word (byte i -> component i).
vec4 nib4(uint v, uint shift) { return vec4((uvec4(v) >> (uvec4(0u, 8u, 16u, 24u) + shift)) & 15u); }
// Four 6-bit Q6_K quants minus 32: nibbles of the ql word (shift 0 / 4) and bit pairs of the qh word (shift 2i).
vec4 q6_4(uint ql, uint ls, uint qh, uint hs) {
    const uvec4 sh = uvec4(0u, 8u, 16u, 24u);
    return vec4(((uvec4(ql) >> (sh + ls)) & 15u) | (((uvec4(qh) >> (sh + hs)) & 3u) << 4u)) - 32.0;
}
// The 6-bit scale (x) and min (y) of Q4_K sub-block s from the 12 scale bytes in words w0, w1, w2 (the packing
// drawn in backends/cpu/dequant.cpp): byte s & 3 of each word, with shifts and one select only, because an array
// indexed at run time costs lavapipe a trip through memory (measured: the Q4_K GEMV 2.6x slower).
uvec2 q4_k_scale_min(uint w0, uint w1, uint w2, uint s) {
    const uint sh = 8u * (s & 3u), a = (w0 >> sh) & 255u, b = (w1 >> sh) & 255u, c = (w2 >> sh) & 255u;
    return s < 4u ? uvec2(a & 63u, b & 63u) : uvec2((c & 15u) | ((a >> 6u) << 4u), (c >> 4u) | ((b >> 6u) << 4u));
}
// The signed byte i (0..3) of a word.
float kq_i8(uint v, uint i) { return float(bitfieldExtract(int(v), int(8u * i), 8)); }

#if defined(QW)
// Byte e (any offset).
uint kq_byte(uint e) { return (QW(e >> 2u) >> (8u * (e & 3u))) & 255u; }

// d * sc and dmin * m of sub-block s of the Q4_K block at byte b (even).
vec2 q4_k_coef(uint b, uint s) {
    const vec2 dd = unpackHalf2x16(q_bytes4(b));  // d, dmin
    const uvec2 sm = q4_k_scale_min(q_bytes4(b + 4u), q_bytes4(b + 8u), q_bytes4(b + 12u), s);
    return vec2(dd.x * float(sm.x), dd.y * float(sm.y));
}

// Element e (0..255) of the block at byte b: what backends/cpu/dequant.cpp computes, bit for bit.
float q4_k_element(uint b, uint e) {
    const uint s = e / 32u;
    const vec2 c = q4_k_coef(b, s);
    const uint q = (kq_byte(b + 16u + 32u * (s / 2u) + e % 32u) >> (4u * (s & 1u))) & 15u;
    return c.x * float(q) - c.y;
}
float q6_k_element(uint b, uint e) {
    const uint h = e / 128u, i = e % 128u / 32u, l = e % 32u;
    const uint lo = (kq_byte(b + 64u * h + 32u * (i & 1u) + l) >> (4u * (i >> 1u))) & 15u;
    const uint hi = (kq_byte(b + 128u + 32u * h + l) >> (2u * i)) & 3u;
    const float sc = float(int(kq_byte(b + 192u + e / 16u) << 24u) >> 24);
    return q_scale(b + 208u) * sc * float(int(lo | (hi << 4u)) - 32);
}

// Elements 32s + 8p .. 32s + 8p + 7 (s = 0..7 the 32-weight slice, p = 0..3) of the block at byte b, as two vec4:
// the tiled shader's decode step.
void q4_k_dec8(uint b, uint s, uint p, out vec4 lo, out vec4 hi) {
    const vec2 c = q4_k_coef(b, s);
    const uint e = b + 16u + 32u * (s / 2u) + 8u * p, sh = 4u * (s & 1u);
    lo = c.x * nib4(q_bytes4(e), sh) - c.y;
    hi = c.x * nib4(q_bytes4(e + 4u), sh) - c.y;
}
void q6_k_dec8(uint b, uint s, uint p, out vec4 lo, out vec4 hi) {
    const uint h = s / 4u, i = s % 4u;
    const uint ql = b + 64u * h + 32u * (i & 1u) + 8u * p, qh = b + 128u + 32u * h + 8u * p;
    // Elements 8p .. 8p + 7 of the slice share scale 8h + 2i + p / 2.
    const float ds = q_scale(b + 208u) * float(int(kq_byte(b + 192u + 8u * h + 2u * i + p / 2u) << 24u) >> 24);
    lo = ds * q6_4(q_bytes4(ql), 4u * (i >> 1u), q_bytes4(qh), 2u * i);
    hi = ds * q6_4(q_bytes4(ql + 4u), 4u * (i >> 1u), q_bytes4(qh + 4u), 2u * i);
}
#endif

// ---- the 64-weight unit (see the header) of the type the shader was built for ----
#if defined(Q6_K)
#define KQ_BYTES Q6_K_BYTES
#define NQ 12u  // quant words per unit: ql (8), qh (4)
uint kq_x_at(uint u, uint s) { return 128u * (u >> 1u) + 16u * (u & 1u) + 32u * (s >> 2u) + 4u * (s & 3u); }
vec2 kq_xsum(const vec4 xv[16]) { return vec2(0.0); }
float kq_dot(const vec4 coef, const uint q[NQ], const vec4 xv[16], vec2 xsum) {
    vec4 s = vec4(0.0);
    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
        s.x += dot(q6_4(q[j], 0u, q[8u + j], 0u), xv[j]);
        s.y += dot(q6_4(q[4u + j], 0u, q[8u + j], 2u), xv[4u + j]);
        s.z += dot(q6_4(q[j], 4u, q[8u + j], 4u), xv[8u + j]);
        s.w += dot(q6_4(q[4u + j], 4u, q[8u + j], 6u), xv[12u + j]);
    }
    return dot(coef, s);
}
#if defined(QW)
// coef: d * sc[8h + 2i + r] for i = 0..3.
void kq_load(uint b, uint u, out vec4 coef, out uint q[NQ]) {
    const uint h = u >> 1u, r = u & 1u;
    const float d = q_scale(b + 208u);
    const uint s0 = q_bytes4(b + 192u + 8u * h), s1 = q_bytes4(b + 196u + 8u * h);
    coef = d * vec4(kq_i8(s0, r), kq_i8(s0, 2u + r), kq_i8(s1, r), kq_i8(s1, 2u + r));
    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
        q[j] = q_bytes4(b + 64u * h + 16u * r + 4u * j);
        q[4u + j] = q_bytes4(b + 64u * h + 32u + 16u * r + 4u * j);
        q[8u + j] = q_bytes4(b + 128u + 32u * h + 16u * r + 4u * j);
    }
}
#endif
#elif defined(Q4_K)
#define KQ_BYTES Q4_K_BYTES
#define NQ 8u  // qs words per unit
uint kq_x_at(uint u, uint s) { return 64u * u + 4u * s; }
vec2 kq_xsum(const vec4 xv[16]) {
    vec4 a = vec4(0.0), b = vec4(0.0);
    [[unroll]] for (uint j = 0u; j < 8u; ++j) a += xv[j], b += xv[8u + j];
    return vec2(dot(a, vec4(1.0)), dot(b, vec4(1.0)));
}
float kq_dot(const vec4 coef, const uint q[NQ], const vec4 xv[16], vec2 xsum) {
    float s0 = 0.0, s1 = 0.0;
    [[unroll]] for (uint j = 0u; j < 8u; ++j) {
        s0 += dot(nib4(q[j], 0u), xv[j]);
        s1 += dot(nib4(q[j], 4u), xv[8u + j]);
    }
    return coef.x * s0 - coef.y * xsum.x + coef.z * s1 - coef.w * xsum.y;
}
#if defined(QW)
// coef: d * sc, dmin * m of sub-blocks 2u and 2u + 1.
void kq_load(uint b, uint u, out vec4 coef, out uint q[NQ]) {
    const vec2 dd = unpackHalf2x16(q_bytes4(b));
    const uint s0 = q_bytes4(b + 4u), s1 = q_bytes4(b + 8u), s2 = q_bytes4(b + 12u);
    const uvec2 a = q4_k_scale_min(s0, s1, s2, 2u * u), z = q4_k_scale_min(s0, s1, s2, 2u * u + 1u);
    coef = vec4(dd.x * float(a.x), dd.y * float(a.y), dd.x * float(z.x), dd.y * float(z.y));
    [[unroll]] for (uint j = 0u; j < 8u; ++j) q[j] = q_bytes4(b + 16u + 32u * u + 4u * j);
}
#endif
#endif
