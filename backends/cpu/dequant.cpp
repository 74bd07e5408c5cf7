// Reference dequantization, written straight from the GGUF block formats for clarity, not speed.
// F32 is a copy and F16 is IEEE binary16. Quantized blocks (all little-endian, no padding):
//
//   Q8_0, 34 bytes per 32 weights:
//     bytes 0..1   d      fp16 scale
//     bytes 2..33  q[32]  int8, element i = d * q[i]
//
//   Q4_0, 18 bytes per 32 weights:
//     bytes 0..1   d      fp16 scale
//     bytes 2..17  qs[16] nibbles: byte j = nibble[j + 16] << 4 | nibble[j]
//                         i.e. low nibble of byte j  -> element j       (j = 0..15)
//                              high nibble of byte j -> element j + 16
//                         element = d * (nibble - 8), nibble in 0..15
//
//   Q4_K, 144 bytes per super-block of 256 weights = 8 sub-blocks of 32:
//     bytes 0..1     d          fp16, scale of the sub-block scales
//     bytes 2..3     dmin       fp16, scale of the sub-block mins
//     bytes 4..15    scales[12] eight 6-bit scales sc[0..7] and eight 6-bit mins m[0..7]:
//                      j = 0..3: sc[j]     = scales[j]     & 63      m[j]     = scales[j + 4] & 63
//                      j = 4..7: sc[j]     = scales[j + 4] & 15  | (scales[j - 4] >> 6) << 4
//                                m[j]      = scales[j + 4] >> 4  | (scales[j]     >> 6) << 4
//                    bit picture (msb left), byte: contents
//                      0..3:  [sc4..7 bits 5:4][sc0..3 bits 5:0]
//                      4..7:  [m4..7  bits 5:4][m0..3  bits 5:0]
//                      8..11: [m4..7  bits 3:0][sc4..7 bits 3:0]
//     bytes 16..143  qs[128]    4-bit quants in four 32-byte groups, group c (c = 0..3) covering elements
//                               64c .. 64c + 63:
//                                 low nibble of qs[32c + l]  -> element 64c + l       (sub-block 2c)
//                                 high nibble of qs[32c + l] -> element 64c + 32 + l  (sub-block 2c + 1)
//     element in sub-block s = d * sc[s] * q - dmin * m[s], q in 0..15
//
//   Q6_K, 210 bytes per super-block of 256 weights = 16 groups of 16 sharing a scale:
//     bytes 0..127    ql[128]    low 4 bits of each 6-bit quant
//     bytes 128..191  qh[64]     high 2 bits, four quants per byte
//     bytes 192..207  scales[16] int8, scales[g] for elements 16g .. 16g + 15
//     bytes 208..209  d          fp16 super-block scale
//   The two halves h = 0, 1 (elements 128h .. 128h + 127) use ql[64h .. 64h + 63] and qh[32h .. 32h + 31];
//   for l = 0..31, element 128h + 32i + l (i = 0..3) has
//       low 4 bits:  i = 0: ql[64h + l] & 15    i = 1: ql[64h + 32 + l] & 15
//                    i = 2: ql[64h + l] >> 4    i = 3: ql[64h + 32 + l] >> 4
//       high 2 bits: bits 2i+1..2i of qh[32h + l]
//   element = d * scales[element / 16] * (q - 32), q in 0..63
#include "backends/cpu/dequant.h"

#include <cstring>

#include "engine/error.h"

namespace tandem {

bool dequant_supported(dtype t) {
    return t == dtype::f32 || t == dtype::f16 || t == dtype::q8_0 || t == dtype::q4_0 || t == dtype::q4_k ||
           t == dtype::q6_k;
}

void q4_k_scale_min(const uint8_t* scales, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4);
        *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
    }
}

namespace {

uint16_t read_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }

void check_blocks(dtype t, int64_t n) {
    const int64_t bs = dtype_info(uint32_t(t))->block_size;
    if (n % bs != 0) {
        throw error(TANDEM_ERR_INTERNAL, std::string(dtype_name(t)) + " row of " + std::to_string(n) +
                                             " elements is not a multiple of " + std::to_string(bs));
    }
}

void dequantize_q4_k(const uint8_t* b, float* y) {
    const float d = fp16_to_fp32(read_u16(b)), dmin = fp16_to_fp32(read_u16(b + 2));
    const uint8_t* scales = b + 4;
    const uint8_t* qs = b + 16;
    for (int s = 0; s < 8; ++s) {
        int sc, m;
        q4_k_scale_min(scales, s, &sc, &m);
        const float ds = d * float(sc), dm = dmin * float(m);
        const uint8_t* group = qs + 32 * (s / 2);
        for (int l = 0; l < 32; ++l) {
            const int q = s % 2 == 0 ? group[l] & 15 : group[l] >> 4;
            y[32 * s + l] = ds * float(q) - dm;
        }
    }
}

void dequantize_q6_k(const uint8_t* b, float* y) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
    const float d = fp16_to_fp32(read_u16(b + 208));
    for (int e = 0; e < 256; ++e) {
        const int h = e / 128, i = e % 128 / 32, l = e % 32;
        const uint8_t low_byte = ql[64 * h + 32 * (i % 2) + l];
        const int low = i < 2 ? low_byte & 15 : low_byte >> 4;
        const int high = (qh[32 * h + l] >> (2 * i)) & 3;
        y[e] = d * float(scales[e / 16]) * float((low | high << 4) - 32);
    }
}

}  // namespace

void dequantize_row(dtype t, const void* src, float* dst, int64_t n) {
    switch (t) {
        case dtype::f32:
            std::memcpy(dst, src, size_t(n) * 4);
            return;
        case dtype::f16: {
            const auto* h = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(h[i]);
            return;
        }
        case dtype::q8_0: {
            check_blocks(t, n);
            const auto* b = static_cast<const uint8_t*>(src);
            for (int64_t blk = 0; blk < n / 32; ++blk, b += 34) {
                const float d = fp16_to_fp32(read_u16(b));
                for (int i = 0; i < 32; ++i) dst[blk * 32 + i] = d * float(int8_t(b[2 + i]));
            }
            return;
        }
        case dtype::q4_0: {
            check_blocks(t, n);
            const auto* b = static_cast<const uint8_t*>(src);
            for (int64_t blk = 0; blk < n / 32; ++blk, b += 18) {
                const float d = fp16_to_fp32(read_u16(b));
                for (int j = 0; j < 16; ++j) {
                    dst[blk * 32 + j] = d * float(int(b[2 + j] & 0x0f) - 8);
                    dst[blk * 32 + j + 16] = d * float(int(b[2 + j] >> 4) - 8);
                }
            }
            return;
        }
        case dtype::q4_k: {
            check_blocks(t, n);
            const auto* b = static_cast<const uint8_t*>(src);
            for (int64_t blk = 0; blk < n / 256; ++blk) dequantize_q4_k(b + blk * 144, dst + blk * 256);
            return;
        }
        case dtype::q6_k: {
            check_blocks(t, n);
            const auto* b = static_cast<const uint8_t*>(src);
            for (int64_t blk = 0; blk < n / 256; ++blk) dequantize_q6_k(b + blk * 210, dst + blk * 256);
            return;
        }
        default:
            throw error(TANDEM_ERR_UNSUPPORTED, "no dequantization for type " + std::string(dtype_name(t)));
    }
}

}  // namespace tandem
