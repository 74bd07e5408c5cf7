// Activation quantization for the quantized matmuls (see quant_acts.h) and the run-time choice of their path.
#include "backends/cpu/quant_acts.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "engine/error.h"

namespace tandem::cpu {

quant_path chosen_path() {
    static const quant_path p = [] {
#if defined(TANDEM_QUANT_AVX512)
        quant_path best = quant_path::avx512;
#elif defined(TANDEM_QUANT_AVX2)
        quant_path best = quant_path::avx2;
#else
        quant_path best = quant_path::scalar;
#endif
        const char* env = std::getenv("TANDEM_CPU_QUANT_PATH");
        if (env == nullptr || *env == '\0') return best;
        const std::string v = env;
        quant_path want;
        if (v == "scalar") {
            want = quant_path::scalar;
        } else if (v == "avx2") {
            want = quant_path::avx2;
        } else if (v == "avx512") {
            want = quant_path::avx512;
        } else {
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        "TANDEM_CPU_QUANT_PATH=" + v + ": expected one of scalar, avx2, avx512");
        }
        if (int(want) > int(best)) {
            throw error(TANDEM_ERR_UNSUPPORTED, "TANDEM_CPU_QUANT_PATH=" + v + ": this build was not compiled for it");
        }
        return want;
    }();
    return p;
}

namespace {

void quantize_block_scalar(const float* x, int8_t* q, float* d_out, int32_t* s_out) {
    float amax = 0.f;
    for (int i = 0; i < qk; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    int32_t s = 0;
    for (int i = 0; i < qk; ++i) {
        const int v = int(std::nearbyint(std::min(127.f, std::max(-127.f, x[i] * id))));
        q[i] = int8_t(v);
        s += v;
    }
    *d_out = d;
    *s_out = -s;
}

#if defined(TANDEM_QUANT_AVX2)
// The scalar rounding exactly: |x * id| <= 127 (up to rounding of id), and cvtps rounds to nearest even like
// nearbyint in the default mode.
void quantize_block_avx2(const float* x, int8_t* q, float* d_out, int32_t* s_out) {
    const __m256 sign = _mm256_set1_ps(-0.f);
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    const __m256 vid = _mm256_set1_ps(id), lim = _mm256_set1_ps(127.f);
    __m256i iv[4];
    for (int i = 0; i < 4; ++i) {
        const __m256 c = _mm256_min_ps(lim, _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), lim),
                                                          _mm256_mul_ps(v[i], vid)));
        iv[i] = _mm256_cvtps_epi32(c);
    }
    const __m256i sum32 = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum32), _mm256_extracti128_si256(sum32, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    // The packs work within 128-bit lanes: 32-bit groups come out in the order 0 2 4 6 1 3 5 7; undo it.
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    *d_out = d;
    *s_out = -_mm_cvtsi128_si32(s4);
}
#endif

}  // namespace

void quantize_row(quant_path path, const float* x, int8_t* q, float* d, int32_t* s, int64_t nblk) {
    quantize_row_into(path, x, nblk, 1, 1, q, d, s);
}

void quantize_row_into(quant_path path, const float* x, int64_t nblk, int64_t stride, int32_t s_mult, int8_t* q,
                       float* d, int32_t* s) {
#if defined(TANDEM_QUANT_AVX2)
    const bool vec = path != quant_path::scalar;
#else
    (void)path;
#endif
    for (int64_t b = 0; b < nblk; ++b) {
        const size_t at = size_t(b * stride);
#if defined(TANDEM_QUANT_AVX2)
        if (vec) {
            quantize_block_avx2(x + b * qk, q + at * qk, d + at, s + at);
        } else
#endif
        {
            quantize_block_scalar(x + b * qk, q + at * qk, d + at, s + at);
        }
        s[at] *= s_mult;
    }
}

}  // namespace tandem::cpu
