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
#include "backends/cpu/dequant.h"

#include <cstring>

#include "engine/error.h"

namespace tandem {

bool dequant_supported(dtype t) { return t == dtype::f32 || t == dtype::f16 || t == dtype::q8_0 || t == dtype::q4_0; }

namespace {

uint16_t read_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }

void check_blocks(dtype t, int64_t n) {
    if (n % 32 != 0) {
        throw error(TANDEM_ERR_INTERNAL,
                    std::string(dtype_name(t)) + " row of " + std::to_string(n) + " elements is not a multiple of 32");
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
        default:
            throw error(TANDEM_ERR_UNSUPPORTED, "no dequantization for type " + std::string(dtype_name(t)));
    }
}

}  // namespace tandem
