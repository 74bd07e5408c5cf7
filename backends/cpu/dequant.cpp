// Reference dequantization. F32 is a copy and F16 is IEEE binary16.
#include "backends/cpu/dequant.h"

#include <cstring>

#include "engine/error.h"

namespace tandem {

bool dequant_supported(dtype t) { return t == dtype::f32 || t == dtype::f16; }

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
        default:
            throw error(TANDEM_ERR_UNSUPPORTED, "no dequantization for type " + std::string(dtype_name(t)));
    }
}

}  // namespace tandem
