// Quantized matmul for the K-quant weights Q4_K and Q6_K on the cpu backend, read in their packed 256-weight
// super-blocks (layouts in backends/cpu/dequant.cpp); no dequantized copy of the matrix is ever made.
//
// The activation rows are first quantized to Q8_K-like blocks of 256: int8 q, one f32 scale, and the sums of q
// over every 16 and every 32 elements. A super-block dot product is then integer arithmetic on 32-byte vectors:
//   Q4_K: a 32-byte group of qs holds sub-block 2c in its low nibbles and 2c + 1 in its high nibbles, each meeting
//         32 contiguous activations. _mm256_maddubs_epi16 multiplies the unsigned nibbles by the int8 activations
//         (pairs <= 2 * 15 * 127, no saturation) and _mm256_madd_epi16 against the sub-block's 6-bit scale
//         broadcast to 16 lanes both widens to int32 and applies the scale. The mins do not touch the quants:
//         sum(dmin * m[s] * x) = dmin * dx * sum_s m[s] * bsum32[s], one 8 x int16 madd per super-block.
//   Q6_K: each half (128 weights) decodes to four 32-byte groups of 6-bit values u = q + 32 in 0..63 (ql nibble
//         | two qh bits << 4), each meeting 32 contiguous activations and spanning two int8 scales, one per
//         128-bit lane; maddubs (pairs <= 2 * 63 * 127) then madd with the two scales. The -32 offset is
//         -32 * sum_g scales[g] * bsum16[g], one 16 x int16 madd per super-block in the same int32 accumulator.
// Per super-block and activation row, f32 FMAs apply d * dx (and dmin * dx). AVX-512 VNNI's dpbusd would replace
// only the maddubs + madd pair and then need a separate int32 multiply for the per-sub-block scale, so it is not
// used here. The 12 scale bytes of Q4_K are unpacked with a few 128-bit integer ops: scalar unpacking plus the moves
// into vector registers kept GEMV clearly below Q4_0's speed; now they stream at about the same GB/s.
// Without AVX2 the same blocks go through a scalar loop with identical integer arithmetic.
// Work split as for Q8_0 / Q4_0 (cpu_matmul_quant.cpp): weight rows over the thread pool; GEMV reads gemv_n weight
// rows per pass, GEMM reads each weight super-block once for tile_m activation rows.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/dequant.h"
#include "engine/error.h"

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define TANDEM_KQUANT_AVX2 1
#endif

namespace tandem::cpu {

namespace {

constexpr int qk_k = 256;

// One activation super-block: x ~= d * q.
struct alignas(32) act_kblock {
    int8_t q[qk_k];
    float d;
    int16_t bsum16[16];  // sum of q over elements 16g .. 16g + 15 (Q6_K's scale groups)
    int16_t bsum32[8];   // sum of q over elements 32s .. 32s + 31 (Q4_K's sub-blocks)
};

void quantize_activations_k(const float* x, act_kblock* out, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, x += qk_k) {
        float amax = 0.f;
        for (int i = 0; i < qk_k; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
        act_kblock& a = out[b];
        for (int i = 0; i < qk_k; ++i) {
            a.q[i] = int8_t(std::nearbyint(std::min(127.f, std::max(-127.f, x[i] * id))));
        }
        for (int g = 0; g < 16; ++g) {
            int s = 0;
            for (int i = 0; i < 16; ++i) s += a.q[16 * g + i];
            a.bsum16[g] = int16_t(s);
        }
        for (int s = 0; s < 8; ++s) a.bsum32[s] = int16_t(a.bsum16[2 * s] + a.bsum16[2 * s + 1]);
        a.d = d;
    }
}

template <dtype T>
constexpr size_t kblock_bytes = T == dtype::q4_k ? 144 : 210;

inline float load_half(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
#if defined(TANDEM_KQUANT_AVX2)
    return _cvtsh_ss(h);
#else
    return fp16_to_fp32(h);
#endif
}

#if defined(TANDEM_KQUANT_AVX2)

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// 16 int16 lanes all equal to int16 lane `j` (0..7) of the 128-bit halves of v (both halves hold the same 8).
inline __m256i splat_word(__m256i v, int j) {
    const char lo = char(2 * j), hi = char(2 * j + 1);
    return _mm256_shuffle_epi8(v, _mm256_setr_epi8(lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo,
                                                   hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi));
}

// Int16 word 2g in the low 128-bit lane and word 2g + 1 in the high lane, each repeated 8 times (v holds the same
// 8 words in both halves): the two scales of a 32-element Q6_K group.
inline __m256i splat_word_pair(__m256i v, int g) {
    const char a = char(4 * g), b = char(4 * g + 1), c = char(4 * g + 2), e = char(4 * g + 3);
    return _mm256_shuffle_epi8(v, _mm256_setr_epi8(a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b, c, e, c, e, c, e, c,
                                                   e, c, e, c, e, c, e, c, e));
}

// Q4_K super-block against MB activation super-blocks x[0], x[stride], ...: acc[mb] += its dot product.
template <int MB>
inline void superblock_q4_k(const uint8_t* blk, const act_kblock* x, int64_t stride, __m256* acc) {
    const float d = load_half(blk), dmin = load_half(blk + 2);
    // The 12 scale bytes as three little-endian words u0, u1, u2 (layout in dequant.cpp): u0 holds sc0..3 in the
    // low 6 bits of its bytes and bits 5:4 of sc4..7 on top; u1 the same for the mins; u2 the low nibbles of sc4..7
    // (low) and m4..7 (high). Per 32-bit lane, one value per byte:
    //   sc0..3 = u0 & 0x3f..   sc4..7 = (u2 & 0x0f..)        | ((u0 >> 2) & 0x30..)
    //   m0..3  = u1 & 0x3f..   m4..7  = ((u2 >> 4) & 0x0f..) | ((u1 >> 2) & 0x30..)
    // (the 16 bytes loaded run 4 bytes into qs, which only fill lanes that are never used).
    const __m128i u = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 4));
    const __m128i low6 = _mm_and_si128(u, _mm_set1_epi8(0x3f));                                 // sc0..3, m0..3
    const __m128i u2 = _mm_srlv_epi32(_mm_shuffle_epi32(u, 0xaa), _mm_setr_epi32(0, 4, 0, 0));  // u2, u2 >> 4
    const __m128i high = _mm_or_si128(_mm_and_si128(u2, _mm_set1_epi8(0x0f)),
                                      _mm_and_si128(_mm_srli_epi32(u, 2), _mm_set1_epi8(0x30)));  // sc4..7, m4..7
    const __m128i scm = _mm_unpacklo_epi32(low6, high);  // bytes: sc0..7, m0..7
    const __m128i sc16 = _mm_cvtepu8_epi16(scm), m16 = _mm_cvtepu8_epi16(_mm_srli_si128(scm, 8));
    const __m256i scales = _mm256_broadcastsi128_si256(sc16);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i isum[MB];
    for (int mb = 0; mb < MB; ++mb) isum[mb] = _mm256_setzero_si256();
    const uint8_t* qs = blk + 16;
    for (int c = 0; c < 4; ++c) {
        const __m256i q = load256(qs + 32 * c);
        const __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
        const __m256i s_lo = splat_word(scales, 2 * c), s_hi = splat_word(scales, 2 * c + 1);
        for (int mb = 0; mb < MB; ++mb) {
            const int8_t* xq = x[mb * stride].q + 64 * c;
            const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(xq)), s_lo);
            const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(xq + 32)), s_hi);
            isum[mb] = _mm256_add_epi32(isum[mb], _mm256_add_epi32(p_lo, p_hi));
        }
    }
    for (int mb = 0; mb < MB; ++mb) {
        const act_kblock& a = x[mb * stride];
        const __m128i mins = _mm_madd_epi16(m16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.bsum32)));
        const __m256 mins8 = _mm256_set_m128(_mm_setzero_ps(), _mm_cvtepi32_ps(mins));
        acc[mb] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[mb]), _mm256_set1_ps(d * a.d), acc[mb]);
        acc[mb] = _mm256_fnmadd_ps(mins8, _mm256_set1_ps(dmin * a.d), acc[mb]);
    }
}

// Q6_K super-block against MB activation super-blocks: acc[mb] += its dot product.
template <int MB>
inline void superblock_q6_k(const uint8_t* blk, const act_kblock* x, int64_t stride, __m256* acc) {
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const float d = load_half(blk + 208);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
    const __m256i low4 = _mm256_set1_epi8(0x0f), bits54 = _mm256_set1_epi8(0x30);
    __m256i isum[MB];
    for (int mb = 0; mb < MB; ++mb) {
        // The -32 offset of every quant: -32 * sum_g scales[g] * bsum16[g].
        const __m256i off = _mm256_madd_epi16(sc16, load256(x[mb * stride].bsum16));
        isum[mb] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
    }
    for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = load256(ql + 64 * h), ql1 = load256(ql + 64 * h + 32), hb = load256(qh + 32 * h);
        // Group i (elements 128h + 32i + l): ql nibble | qh bits 2i+1..2i moved to bits 5..4. The 16-bit shifts
        // carry bits across byte boundaries, but only into positions the masks clear.
        const __m256i u[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), bits54)),
            _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), bits54)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), _mm256_and_si256(hb, bits54)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                            _mm256_and_si256(_mm256_srli_epi16(hb, 2), bits54)),
        };
        // Scales 8h .. 8h + 7 in both 128-bit lanes.
        const __m256i sh =
            h == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11);
        for (int i = 0; i < 4; ++i) {
            const __m256i s = splat_word_pair(sh, i);
            for (int mb = 0; mb < MB; ++mb) {
                const __m256i xq = load256(x[mb * stride].q + 128 * h + 32 * i);
                isum[mb] = _mm256_add_epi32(isum[mb], _mm256_madd_epi16(_mm256_maddubs_epi16(u[i], xq), s));
            }
        }
    }
    for (int mb = 0; mb < MB; ++mb) {
        acc[mb] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[mb]), _mm256_set1_ps(d * x[mb * stride].d), acc[mb]);
    }
}

// out[mb * ldo + nb] = dot(weight row nb, activation row mb) for an MB x NB tile. Weight rows are row_bytes
// apart, activation rows nblk super-blocks apart.
template <dtype T, int MB, int NB>
void tile(const uint8_t* w, size_t row_bytes, const act_kblock* x, int64_t nblk, float* out, int64_t ldo) {
    __m256 acc[NB][MB];
    for (auto& r : acc)
        for (auto& a : r) a = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; ++b) {
#pragma GCC unroll 4  // keeps acc in registers (GCC leaves the large body rolled otherwise)
        for (int nb = 0; nb < NB; ++nb) {
            const uint8_t* blk = w + size_t(nb) * row_bytes + size_t(b) * kblock_bytes<T>;
            if constexpr (T == dtype::q4_k) {
                superblock_q4_k<MB>(blk, x + b, nblk, acc[nb]);
            } else {
                superblock_q6_k<MB>(blk, x + b, nblk, acc[nb]);
            }
        }
    }
    for (int mb = 0; mb < MB; ++mb)
        for (int nb = 0; nb < NB; ++nb) out[mb * ldo + nb] = hsum(acc[nb][mb]);
}

#else  // scalar fallback: the same integer arithmetic

// Integer dot product of one super-block with one activation super-block, in units of d (and dmin) times a.d:
// *main is sum over the quants with their scales, *mins (Q4_K only) sum_s m[s] * bsum32[s].
template <dtype T>
void superblock_dot(const uint8_t* blk, const act_kblock& a, int32_t* main, int32_t* mins) {
    int32_t s = 0, mn = 0;
    if constexpr (T == dtype::q4_k) {
        for (int sb = 0; sb < 8; ++sb) {
            int sc, m;
            q4_k_scale_min(blk + 4, sb, &sc, &m);
            const uint8_t* group = blk + 16 + 32 * (sb / 2);
            int32_t dot = 0;
            for (int l = 0; l < 32; ++l) dot += int32_t(sb % 2 == 0 ? group[l] & 15 : group[l] >> 4) * a.q[32 * sb + l];
            s += sc * dot;
            mn += m * a.bsum32[sb];
        }
    } else {
        const uint8_t* ql = blk;
        const uint8_t* qh = blk + 128;
        const auto* scales = reinterpret_cast<const int8_t*>(blk + 192);
        for (int g = 0; g < 16; ++g) {
            int32_t dot = 0;
            for (int e = 16 * g; e < 16 * g + 16; ++e) {
                const int h = e / 128, i = e % 128 / 32, l = e % 32;
                const uint8_t lb = ql[64 * h + 32 * (i % 2) + l];
                const int u = (i < 2 ? lb & 15 : lb >> 4) | ((qh[32 * h + l] >> (2 * i)) & 3) << 4;
                dot += u * a.q[e];
            }
            s += scales[g] * (dot - 32 * a.bsum16[g]);
        }
    }
    *main = s;
    *mins = mn;
}

template <dtype T, int MB, int NB>
void tile(const uint8_t* w, size_t row_bytes, const act_kblock* x, int64_t nblk, float* out, int64_t ldo) {
    float acc[MB][NB] = {};
    for (int64_t b = 0; b < nblk; ++b) {
        for (int nb = 0; nb < NB; ++nb) {
            const uint8_t* blk = w + size_t(nb) * row_bytes + size_t(b) * kblock_bytes<T>;
            const float d = T == dtype::q4_k ? load_half(blk) : load_half(blk + 208);
            const float dmin = T == dtype::q4_k ? load_half(blk + 2) : 0.f;
            for (int mb = 0; mb < MB; ++mb) {
                const act_kblock& a = x[mb * nblk + b];
                int32_t s, mn;
                superblock_dot<T>(blk, a, &s, &mn);
                acc[mb][nb] += float(s) * (d * a.d) - float(mn) * (dmin * a.d);
            }
        }
    }
    for (int mb = 0; mb < MB; ++mb)
        for (int nb = 0; nb < NB; ++nb) out[mb * ldo + nb] = acc[mb][nb];
}

#endif

// Tiles: GEMM reads one weight row's super-block for 4 activation rows (4 f32 accumulators, 4 int32 partial sums,
// the unpacked quants and scales stay within the 16 AVX2 registers); GEMV reads one weight row after the other, one
// sequential stream per thread (as cpu_matmul_quant.cpp: 4 rows side by side read DRAM more slowly).
constexpr int tile_m = 4, tile_n = 1, gemv_n = 1;

template <dtype T, int MB>
void all_rows(const uint8_t* w, size_t rb, const act_kblock* x, int64_t nblk, int64_t n0, int64_t n1, float* out,
              int64_t n, int64_t m) {
    int64_t r = 0;
    for (; r + MB <= m; r += MB) {
        for (int64_t j = n0; j < n1; j += tile_n) {
            tile<T, MB, tile_n>(w + size_t(j) * rb, rb, x + r * nblk, nblk, out + r * n + j, n);
        }
    }
    if constexpr (MB > 1) {
        if (r < m) all_rows<T, MB - 1>(w, rb, x + r * nblk, nblk, n0, n1, out + r * n, n, m - r);
    }
}

template <dtype T>
void matmul_k(thread_pool& pool, const uint8_t* w, const act_kblock* x, float* out, int64_t k, int64_t n, int64_t m) {
    const int64_t nblk = k / qk_k;
    const size_t rb = size_t(nblk) * kblock_bytes<T>;
    if (m == 1) {
        const int64_t groups = (n + gemv_n - 1) / gemv_n;
        pool.parallel_for(groups, grain(gemv_n * k), [&](int64_t g0, int64_t g1) {
            const int64_t n1 = std::min(n, g1 * gemv_n);
            int64_t j = g0 * gemv_n;
            for (; j + gemv_n <= n1; j += gemv_n) tile<T, 1, gemv_n>(w + size_t(j) * rb, rb, x, nblk, out + j, n);
            for (; j < n1; ++j) tile<T, 1, 1>(w + size_t(j) * rb, rb, x, nblk, out + j, n);
        });
        return;
    }
    // Weight rows in groups of 4: each group's super-blocks stay in L1/L2 while all activation rows pass.
    constexpr int64_t group = 4;
    const int64_t groups = (n + group - 1) / group;
    pool.parallel_for(groups, grain(group * k * m), [&](int64_t g0, int64_t g1) {
        const int64_t n0 = g0 * group, n1 = std::min(n, g1 * group);
        for (int64_t j = n0; j < n1; j += group)
            all_rows<T, tile_m>(w, rb, x, nblk, j, std::min(n1, j + group), out, n, m);
    });
}

}  // namespace

bool kquant_supported(dtype t) { return t == dtype::q4_k || t == dtype::q6_k; }

void matmul_kquant(thread_pool& pool, const tensor& w, const tensor& x, const tensor& out) {
    const int64_t k = w.ne[0], n = w.nrows(), m = x.nrows();
    if (!kquant_supported(w.type)) {
        throw error(TANDEM_ERR_UNSUPPORTED, "cpu matmul: weight type " + std::string(dtype_name(w.type)));
    }
    if (k % qk_k != 0) {
        throw error(TANDEM_ERR_INTERNAL, "cpu matmul: " + std::string(dtype_name(w.type)) + " rows of " +
                                             std::to_string(k) + " elements are not whole super-blocks");
    }
    float* op = out.host<float>();
    if (m == 0 || n == 0) return;
    if (k == 0) {
        std::fill(op, op + m * n, 0.f);
        return;
    }
    const int64_t nblk = k / qk_k;
    std::vector<act_kblock> xq(size_t(m * nblk));  // per call, so concurrent calls on one backend stay safe
    const float* xp = x.host<const float>();
    pool.parallel_for(m, grain(k * 4), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) quantize_activations_k(xp + r * k, xq.data() + r * nblk, nblk);
    });
    const auto* wp = w.host<const uint8_t>();
    if (w.type == dtype::q4_k) return matmul_k<dtype::q4_k>(pool, wp, xq.data(), op, k, n, m);
    return matmul_k<dtype::q6_k>(pool, wp, xq.data(), op, k, n, m);
}

}  // namespace tandem::cpu
