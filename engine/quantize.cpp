// Reference quantizers for Q8_0 and Q4_0 (see quantize.h for the rules, backends/cpu/dequant.cpp for the
// bit layout). Scalar and simple: quantizing a model is a one-off, so clarity wins over speed here.
#include "engine/quantize.h"

#include <cmath>
#include <string>

#include "engine/error.h"

namespace tandem {

bool quantize_supported(dtype t) { return t == dtype::q8_0 || t == dtype::q4_0; }

namespace {

void write_u16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v & 0xff);
    p[1] = uint8_t(v >> 8);
}

// One Q8_0 block: 2-byte fp16 d, then 32 int8.
void quantize_block_q8_0(const float* x, uint8_t* out) {
    float amax = 0.f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    write_u16(out, fp32_to_fp16(d));
    // |x * id| <= 127 up to one rounding of id: the clamp only guards that last ulp.
    for (int i = 0; i < 32; ++i) {
        const float q = std::round(x[i] * id);
        out[2 + i] = uint8_t(int8_t(std::max(-127.f, std::min(127.f, q))));
    }
}

// One Q4_0 block: 2-byte fp16 d, then 16 bytes with element j in the low nibble of byte j and element j + 16
// in its high nibble.
void quantize_block_q4_0(const float* x, uint8_t* out) {
    float amax = 0.f, m = 0.f;
    for (int i = 0; i < 32; ++i) {
        if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), m = x[i];
    }
    const float d = m / -8.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    write_u16(out, fp32_to_fp16(d));
    auto nibble = [&](float v) {
        // v * id + 8 is in [0, 16]: round half up (the argument is never negative), clamp the top to 15.
        const float q = std::floor(v * id + 8.5f);
        return uint8_t(std::max(0.f, std::min(15.f, q)));
    };
    for (int j = 0; j < 16; ++j) out[2 + j] = uint8_t(nibble(x[j]) | (nibble(x[j + 16]) << 4));
}

}  // namespace

void quantize_row(dtype t, const float* src, void* dst, int64_t n) {
    if (!quantize_supported(t)) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "quantize_row: cannot quantize to " + std::string(dtype_name(t)));
    }
    if (n % 32 != 0 || n < 0) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT,
                    "quantize_row: " + std::to_string(n) + " elements is not a multiple of the block size 32");
    }
    auto* out = static_cast<uint8_t*>(dst);
    for (int64_t b = 0; b < n / 32; ++b) {
        if (t == dtype::q8_0) {
            quantize_block_q8_0(src + b * 32, out + b * 34);
        } else {
            quantize_block_q4_0(src + b * 32, out + b * 18);
        }
    }
}

}  // namespace tandem
