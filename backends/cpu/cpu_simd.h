// A minimal vector-of-floats vocabulary for the CPU kernels, so each kernel is written once: AVX-512
// (16 lanes), AVX2 + FMA + F16C (8 lanes) or scalar (1 lane), chosen by the compiler flags of the build.
// Loads from f16 memory convert exactly (f16 -> f32 is exact); stores to f16 round to nearest even.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "engine/types.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#endif

namespace tandem::simd {

#if defined(__AVX512F__)

// The zero-masking (maskz) forms are used where the plain intrinsic would do: GCC 12's plain forms pass
// an "undefined" vector that trips -Wuninitialized once inlined (GCC bug 105593); with a full mask they
// compute the same thing.
constexpr int width = 16;
using vf = __m512;
constexpr __mmask16 all = 0xffff;
inline vf zero() { return _mm512_setzero_ps(); }
inline vf set1(float a) { return _mm512_set1_ps(a); }
inline vf load(const float* p) { return _mm512_loadu_ps(p); }
inline vf load(const uint16_t* p) {
    return _mm512_maskz_cvtph_ps(all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline void store(float* p, vf a) { _mm512_storeu_ps(p, a); }
inline void store(uint16_t* p, vf a) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_maskz_cvtps_ph(all, a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline vf add(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf div(vf a, vf b) { return _mm512_div_ps(a, b); }
inline vf max(vf a, vf b) { return _mm512_maskz_max_ps(all, a, b); }
inline vf min(vf a, vf b) { return _mm512_maskz_min_ps(all, a, b); }
inline vf fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }    // a * b + c
inline vf fnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a * b
// The two 256-bit halves of a.
inline __m256 low_half(vf a) { return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xf, _mm512_castps_pd(a), 0)); }
inline __m256 high_half(vf a) { return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xf, _mm512_castps_pd(a), 1)); }
inline float reduce_add(vf a) {
    const __m256 h = _mm256_add_ps(low_half(a), high_half(a));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline float reduce_max(vf a) {
    const __m256 h = _mm256_max_ps(low_half(a), high_half(a));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
// Lane i of the result = sum of the lanes of v[i], for `width` vectors. (Per-vector reductions: simple;
// a shuffle network would be faster but could not be run on the AVX2 machine these kernels were built on.)
inline vf sum_each(const vf* v) {
    alignas(64) float t[16];
    for (int i = 0; i < 16; ++i) t[i] = reduce_add(v[i]);
    return _mm512_load_ps(t);
}
inline vf round(vf a) { return _mm512_maskz_roundscale_ps(all, a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integral n in [-126, 127], built in the exponent field.
inline vf pow2i(vf n) {
    const __m512i e = _mm512_add_epi32(_mm512_maskz_cvtps_epi32(all, n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, e, 23));
}
// a where x >= t, else 0.
inline vf keep_ge(vf a, vf x, float t) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, set1(t), _CMP_GE_OQ), a); }

#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

constexpr int width = 8;
using vf = __m256;
inline vf zero() { return _mm256_setzero_ps(); }
inline vf set1(float a) { return _mm256_set1_ps(a); }
inline vf load(const float* p) { return _mm256_loadu_ps(p); }
inline vf load(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline void store(float* p, vf a) { _mm256_storeu_ps(p, a); }
inline void store(uint16_t* p, vf a) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline vf add(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf div(vf a, vf b) { return _mm256_div_ps(a, b); }
inline vf max(vf a, vf b) { return _mm256_max_ps(a, b); }
inline vf fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline float reduce_add(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline float reduce_max(vf a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
// Lane i of the result = sum of the lanes of v[i], for 8 vectors: two rounds of pairwise horizontal adds,
// then the two 128-bit halves added.
inline vf sum_each(const vf* v) {
    const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
inline vf min(vf a, vf b) { return _mm256_min_ps(a, b); }
inline vf fnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
inline vf round(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vf pow2i(vf n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline vf keep_ge(vf a, vf x, float t) { return _mm256_and_ps(a, _mm256_cmp_ps(x, set1(t), _CMP_GE_OQ)); }

#else

constexpr int width = 1;
using vf = float;
inline vf zero() { return 0.f; }
inline vf set1(float a) { return a; }
inline vf load(const float* p) { return *p; }
inline vf load(const uint16_t* p) { return fp16_to_fp32(*p); }
inline void store(float* p, vf a) { *p = a; }
inline void store(uint16_t* p, vf a) { *p = fp32_to_fp16(a); }
inline vf add(vf a, vf b) { return a + b; }
inline vf mul(vf a, vf b) { return a * b; }
inline vf div(vf a, vf b) { return a / b; }
inline vf max(vf a, vf b) { return a > b ? a : b; }
inline vf fma(vf a, vf b, vf c) { return a * b + c; }
inline float reduce_add(vf a) { return a; }
inline float reduce_max(vf a) { return a; }
inline vf exp(vf x) { return std::exp(x); }
inline vf sum_each(const vf* v) { return v[0]; }

#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
// e^x to about 2 ulp, the same algorithm on both vector widths: x = n ln2 + r with |r| <= ln2 / 2
// (ln2 split in two parts for an exact reduction), e^r by the Cephes expf polynomial, times 2^n. Results
// below FLT_MIN (x < -87.34) are flushed to 0; x above 88.37 is clamped (e^x ~ 2.4e38).
inline vf exp(vf x) {
    constexpr float lo = -87.33654f, hi = 88.37f;  // hi keeps n <= 127
    const vf xc = min(max(x, set1(lo)), set1(hi));
    const vf n = round(mul(xc, set1(1.44269504088896341f)));
    vf r = fnma(n, set1(0.693359375f), xc);
    r = fnma(n, set1(-2.12194440e-4f), r);
    vf p = set1(1.9875691500e-4f);
    p = fma(p, r, set1(1.3981999507e-3f));
    p = fma(p, r, set1(8.3334519073e-3f));
    p = fma(p, r, set1(4.1665795894e-2f));
    p = fma(p, r, set1(1.6666665459e-1f));
    p = fma(p, r, set1(5.0000001201e-1f));
    const vf y = add(fma(mul(p, r), r, r), set1(1.f));
    return keep_ge(mul(y, pow2i(n)), x, lo);
}
#endif

// Scalar element access for loop tails.
inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t v) { return fp16_to_fp32(v); }
inline void from_f32(float* p, float v) { *p = v; }
inline void from_f32(uint16_t* p, float v) { *p = fp32_to_fp16(v); }

// sum_i a[i] * b[i] with vector accumulators (two chains to hide FMA latency).
template <typename TA, typename TB>
inline float dot(const TA* a, const TB* b, int64_t n) {
    vf s0 = zero(), s1 = zero();
    int64_t i = 0;
    for (; i + 2 * width <= n; i += 2 * width) {
        s0 = fma(load(a + i), load(b + i), s0);
        s1 = fma(load(a + i + width), load(b + i + width), s1);
    }
    for (; i + width <= n; i += width) s0 = fma(load(a + i), load(b + i), s0);
    float s = reduce_add(add(s0, s1));
    for (; i < n; ++i) s += to_f32(a[i]) * to_f32(b[i]);
    return s;
}

// The largest of x[0 .. n) (-inf when n = 0), with vector maxes (a scalar loop is a chain of dependent maxes).
inline float max_of(const float* x, int64_t n) {
    float best = -std::numeric_limits<float>::infinity();
    int64_t i = 0;
    if (n >= width) {
        vf mv = load(x);
        for (i = width; i + width <= n; i += width) mv = max(mv, load(x + i));
        best = reduce_max(mv);
    }
    for (; i < n; ++i) best = std::max(best, x[i]);
    return best;
}

// t[i][j] = x[j][i] for an 8 x 8 block (x rows `stride` apart, t rows `ld` apart), f16 converted: with AVX2, eight
// rows in and eight columns out through two rounds of in-lane shuffles and one across the 128-bit halves (8 loads,
// 24 shuffles and 8 stores instead of 64 scalar moves).
template <typename CT>
inline void transpose_8x8(const CT* x, int64_t stride, float* t, int64_t ld) {
#if defined(__AVX2__) && defined(__F16C__)
    __m256 r[8], u[8];
    for (int j = 0; j < 8; ++j) {
        if constexpr (sizeof(CT) == 2)
            r[j] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + j * stride)));
        else
            r[j] = _mm256_loadu_ps(reinterpret_cast<const float*>(x + j * stride));
    }
    for (int j = 0; j < 8; j += 2)
        u[j] = _mm256_unpacklo_ps(r[j], r[j + 1]), u[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
    for (int j = 0; j < 8; j += 4) {
        r[j] = _mm256_shuffle_ps(u[j], u[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[j + 1] = _mm256_shuffle_ps(u[j], u[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[j + 2] = _mm256_shuffle_ps(u[j + 1], u[j + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[j + 3] = _mm256_shuffle_ps(u[j + 1], u[j + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(t + i * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(t + (i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
#else
    for (int j = 0; j < 8; ++j)
        for (int i = 0; i < 8; ++i) t[i * ld + j] = to_f32(x[j * stride + i]);
#endif
}

// dst[i] = src[i] converted (f32 <-> f16 or a copy).
template <typename TS, typename TD>
inline void convert(const TS* src, TD* dst, int64_t n) {
    int64_t i = 0;
    for (; i + width <= n; i += width) store(dst + i, load(src + i));
    for (; i < n; ++i) from_f32(dst + i, to_f32(src[i]));
}

}  // namespace tandem::simd
