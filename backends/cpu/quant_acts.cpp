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

#if defined(TANDEM_QUANT_AVX512)
// Sixteen blocks at a time. Per block, the AVX2 kernel spends most of its time on two horizontal reductions (the
// max and the sum, shuffles that all compete for one port) and a scalar division: 5.0-5.3 us for 9 rows of 2048 in
// a hot loop, ~12 us inside a verification pass, where the worker thread waits for it. Here the 16 blocks' partial
// maxima (and sums) are reduced together, four rounds of shuffles for all of them, and their scales come from one
// vector division. The operations on each value are the AVX2 kernel's, so the results are the same bit for bit.

// The zero-masking forms with a full mask: the plain ones trip GCC 12's -Wuninitialized (bug 105593).
constexpr __mmask16 k16 = 0xffff;

// The lanes of one vector per block reduced into one vector, block b's result in lane lane_map::lane_of[b]. op is
// max (floats) or add (int32, in float registers).
template <typename Op>
__m512 reduce16(__m512* v, Op op) {
    for (int i = 0; i < 8; ++i) {  // 16 -> 8: lanes 0-7 block 2i, 8-15 block 2i + 1
        const __m512 a = v[2 * i], b = v[2 * i + 1];
        v[i] = op(_mm512_maskz_shuffle_f32x4(k16, a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                  _mm512_maskz_shuffle_f32x4(k16, a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int i = 0; i < 4; ++i) {  // 8 -> 4: each 128-bit lane one block
        const __m512 a = v[2 * i], b = v[2 * i + 1];
        v[i] = op(_mm512_maskz_shuffle_f32x4(k16, a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                  _mm512_maskz_shuffle_f32x4(k16, a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    for (int i = 0; i < 2; ++i) {  // 4 -> 2: two lanes per block
        const __m512 a = v[2 * i], b = v[2 * i + 1];
        v[i] = op(_mm512_maskz_shuffle_ps(k16, a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                  _mm512_maskz_shuffle_ps(k16, a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    return op(_mm512_maskz_shuffle_ps(k16, v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
              _mm512_maskz_shuffle_ps(k16, v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

inline __m512 max_op(__m512 a, __m512 b) { return _mm512_maskz_max_ps(k16, a, b); }
inline __m512 add_i32_op(__m512 a, __m512 b) {
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}

// lane_of[b]: the lane where reduce16 leaves block b, found by reducing vectors that carry their block number.
struct lane_map {
    int lane_of[16];
    lane_map() {
        __m512 v[16];
        for (int b = 0; b < 16; ++b) v[b] = _mm512_set1_ps(float(b));
        alignas(64) float out[16];
        _mm512_store_ps(out, reduce16(v, max_op));
        for (int l = 0; l < 16; ++l) lane_of[int(out[l])] = l;
    }
};

void quantize16_avx512(const float* x, int64_t stride, int32_t s_mult, int8_t* q, float* d_out, int32_t* s_out) {
    static const lane_map map;
    const __m512 lim = _mm512_set1_ps(127.f), neg_lim = _mm512_set1_ps(-127.f);
    __m512 part[16];
    for (int b = 0; b < 16; ++b)
        part[b] = _mm512_maskz_max_ps(k16, _mm512_abs_ps(_mm512_loadu_ps(x + qk * b)),
                                      _mm512_abs_ps(_mm512_loadu_ps(x + qk * b + 16)));
    const __m512 d = _mm512_div_ps(reduce16(part, max_op), lim);
    const __m512 id =
        _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ), _mm512_set1_ps(1.f), d);
    alignas(64) float ds[16], ids[16];
    _mm512_store_ps(ds, d);
    _mm512_store_ps(ids, id);
    __m512 sums[16];
    for (int b = 0; b < 16; ++b) {
        const __m512 vid = _mm512_set1_ps(ids[map.lane_of[b]]);
        int8_t* qb = q + qk * b * stride;
        __m512i iv[2];
        for (int h = 0; h < 2; ++h) {
            const __m512 c = _mm512_maskz_min_ps(
                k16, lim, _mm512_maskz_max_ps(k16, neg_lim, _mm512_mul_ps(_mm512_loadu_ps(x + qk * b + 16 * h), vid)));
            iv[h] = _mm512_maskz_cvtps_epi32(k16, c);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16 * h), _mm512_maskz_cvtsepi32_epi8(k16, iv[h]));
        }
        sums[b] = _mm512_castsi512_ps(_mm512_add_epi32(iv[0], iv[1]));
    }
    alignas(64) int32_t ss[16];
    _mm512_store_si512(ss, _mm512_castps_si512(reduce16(sums, add_i32_op)));
    for (int b = 0; b < 16; ++b) {
        d_out[b * stride] = ds[map.lane_of[b]];
        s_out[b * stride] = -ss[map.lane_of[b]] * s_mult;
    }
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
    int64_t b = 0;
#if defined(TANDEM_QUANT_AVX512)
    if (path == quant_path::avx512) {
        for (; b + 16 <= nblk; b += 16) {
            const size_t at = size_t(b * stride);
            quantize16_avx512(x + b * qk, stride, s_mult, q + at * qk, d + at, s + at);
        }
    }
#endif
    for (; b < nblk; ++b) {
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
