// K-quant super-block decoding (GGUF Q4_K / Q6_K: 256 weights per super-block), shared by mul_mv_kquant.cl,
// mul_mm_kquant.cl and get_rows_kquant.cl: the program cache prepends this file to those three (the embedding
// has no #include; the table is in backends/opencl/program_cache.cpp). Byte layouts, as in backends/cpu/dequant.cpp:
//   Q4_K, 144 bytes: d fp16 @0, dmin fp16 @2, scales[12] @4 (eight 6-bit scales sc and mins m, packed),
//                    qs[128] @16: low nibble of qs[32c + l] -> element 64c + l, high nibble -> 64c + 32 + l;
//                    element = d * sc[s] * q - dmin * m[s] for sub-block s = element / 32, q in 0..15.
//   Q6_K, 210 bytes: ql[128] @0, qh[64] @128, int8 scales[16] @192, d fp16 @208; element 128h + 32i + l
//                    (h = 0..1, i = 0..3, l = 0..31) has low 4 bits in ql[64h + 32(i & 1) + l] (low nibble for
//                    i < 2, high for i >= 2) and high 2 bits in bits 2i+1..2i of qh[32h + l];
//                    element = d * scales[element / 16] * (q - 32), q in 0..63.
// The kernels see a super-block as 16 chunks of 16 weights, t = 0..15, each one 16-byte load of quants (plus one
// of high bits for Q6_K), one widening to float16 and one fma (Q4_K) or multiply (Q6_K) with its scale:
//   Q4_K chunk t: bytes qs[32(t / 4) + 16(t & 1)], nibble (t & 2) / 2: elements 16t .. 16t + 15, sub-block t / 2.
//   Q6_K chunk t (u = t / 4, h = u / 2, j = u & 1, i = t & 3): ql[64h + 32(i & 1) + 16j], nibble i / 2,
//                qh[32h + 16j] bits 2i: elements 128h + 32i + 16j .. +15, scale group 8h + 2i + j.
// Every decoded weight equals cpu_ref's bit for bit: Q4_K's d * sc * q (at most 11 + 6 + 4 significant bits) is
// exact in f32, so the fma rounds only the final subtraction, as cpu_ref does; Q6_K's d * scale * (q - 32) (at most
// 11 + 7 + 5 bits) is exact in any order.
// Super-blocks are 144 and 210 bytes, so they sit at any even byte offset: quants come through vload16 of uchar
// (element alignment 1), scales are assembled from bytes (half_bits_to_float, block_scale are in common.cl).

#define QK_K 256
#define Q4_K_BYTES 144
#define Q6_K_BYTES 210

// First element of chunk t within its super-block (is_q6 is a literal at every call site).
inline int kq_chunk_first(int t, const int is_q6) {
    if (!is_q6) return 16 * t;
    const int u = t >> 2;
    return 128 * (u >> 1) + 32 * (t & 3) + 16 * (u & 1);
}

// The 16 unsigned quants of chunk t of the super-block at b (Q4_K: 0..15, Q6_K: 0..63).
inline uchar16 kq_chunk_quants(__global const uchar* b, int t, const int is_q6) {
    const int u = t >> 2, i = t & 3;
    if (!is_q6) {
        const uchar16 q = vload16(0, b + 16 + 32 * u + 16 * (i & 1));
        return (i & 2) ? q >> (uchar16)4 : q & (uchar16)15;
    }
    const int h = u >> 1, j = u & 1;
    const uchar16 lo = vload16(0, b + 64 * h + 32 * (i & 1) + 16 * j);
    const uchar16 hi = vload16(0, b + 128 + 32 * h + 16 * j);
    const uchar16 low4 = (i & 2) ? lo >> (uchar16)4 : lo & (uchar16)15;
    return low4 | (((hi >> (uchar16)(2 * i)) & (uchar16)3) << (uchar16)4);
}

// The scale of chunk t (Q4_K: and its offset): Q4_K weights are scale * q - offset with scale = d * sc[s],
// offset = dmin * m[s] for sub-block s = t / 2 (the 6-bit values unpacked as backends/cpu/dequant.cpp's
// q4_k_scale_min does); Q6_K weights are scale * (q - 32) with scale = d * scales[g] for group g.
inline void kq_chunk_scale(__global const uchar* b, int t, float* scale, float* offset, const int is_q6) {
    if (is_q6) {
        const int g = kq_chunk_first(t, 1) >> 4;
        *scale = half_bits_to_float((uint)b[208] | ((uint)b[209] << 8)) * (float)((__global const char*)b)[192 + g];
        *offset = 0.f;
        return;
    }
    __global const uchar* s = b + 4;
    const int j = t >> 1;
    int sc, m;
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    *scale = block_scale(b) * (float)sc;
    *offset = half_bits_to_float((uint)b[2] | ((uint)b[3] << 8)) * (float)m;
}

// Chunk t of the super-block at b, dequantized (bit-identical to cpu_ref, see above). Q6_K multiplies by the
// signed q - 32 rather than subtracting 32 * scale: the same value, but q = 32 under a negative scale must give
// -0 as cpu_ref does (get_rows is compared bit for bit).
inline float16 kq_chunk(__global const uchar* b, int t, const int is_q6) {
    float scale, offset;
    kq_chunk_scale(b, t, &scale, &offset, is_q6);
    const uchar16 q = kq_chunk_quants(b, t, is_q6);
    if (is_q6) return scale * convert_float16(as_char16(q) - (char16)32);
    return fma((float16)scale, convert_float16(q), (float16)(-offset));
}
