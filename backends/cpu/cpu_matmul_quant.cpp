// Quantized matmul and get_rows for the cpu backend: Q8_0 and Q4_0 weights read in their file blocks (block
// layouts in backends/cpu/dequant.cpp); no dequantized or repacked copy of the matrix is made. A model's weights
// are prepared instead (backend::prepare_weight: rows interleaved in groups of 16, cpu_matmul_packed.cpp, about
// 3x fewer instructions per weight) where the AVX512-VNNI path runs; this file serves everything else.
//
// Each call first quantizes the activation rows to Q8 blocks of 32 int8 with an f32 scale and the sum of the 32
// int8, kept as three arrays (all int8 of a row contiguous, so two blocks fill one 64-byte register). Then every
// weight block against an activation block is an integer dot product of 32 bytes, scaled by d_w * d_x in one FMA:
//   Q8_0 (int8 x int8):   the unsigned-by-signed byte instructions take |w| and x with w's sign moved onto it;
//   Q4_0 (nibble x int8): the nibbles 0..15 are already unsigned and go in as they are; the -8 offset is applied
//                         once per block as -8 * sum(x_q) (the precomputed activation sum).
// Three code paths, the best one compiled in chosen at run time (TANDEM_CPU_QUANT_PATH=avx2|scalar forces a
// lower one, so the tests run every path this machine can execute):
//   avx512: AVX512-VNNI. Two blocks per 512-bit register and _mm512_dpbusd_epi32 (bytes to int32 in one
//           instruction), 8 lanes per block, so a block pair costs about as much as one block on avx2.
//   avx2:   AVX2 _mm256_maddubs_epi16 then _mm256_madd_epi16 with ones, one block per register.
//   scalar: the same integer arithmetic in plain loops.
// Why: decode is bound by streaming the weights; int8 products use 4x fewer instructions per weight than
// dequantizing to f32 and FMA-ing, and VNNI halves them again, so one core keeps up with memory. Quantizing the
// activations is the price: about 0.4% relative error per element (half a step of 1/127 of the block maximum),
// see the harness tolerance.
// Work split: output rows (weight rows) over the thread pool. Matrix-matrix: each group reads a weight block once
// for a tile of activation rows. Matrix-vector: one weight row after the other, so each thread reads its share of
// the matrix as one sequential stream; reading 4 rows side by side (4 short streams restarting every 4 rows) was
// 1.7x slower from DRAM at 4096 x 4096, on both the avx2 and the avx512 path (the hardware prefetchers follow one
// stream well, several short ones late; software prefetching did not recover it).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/cpu_simd.h"
#include "backends/cpu/dequant.h"
#include "backends/cpu/quant_acts.h"
#include "engine/error.h"

namespace tandem::cpu {

namespace {

// Quantized activation rows: row r has its int8 at q + r * nblk * qk, its block scales and sums at d / s +
// r * nblk.
struct acts {
    const int8_t* q;
    const float* d;    // x ~= d * q, kept in f32 (no fp16 rounding needed)
    const int32_t* s;  // minus the sum of the 32 q of a block, for the Q4_0 offset
    int64_t nblk;
    // Optional (avx512 matrix-vector only): d and s of blocks 2p and 2p + 1 spread over lanes 0..7 and 8..15 of
    // 16 values per block pair p, for row 0.
    const float* pair_d = nullptr;
    const int32_t* pair_s = nullptr;
    acts row(int64_t r) const {
        const bool r0 = r == 0;
        return {q + r * nblk * qk, d + r * nblk, s + r * nblk, nblk, r0 ? pair_d : nullptr, r0 ? pair_s : nullptr};
    }
};

// Fills pair_d / pair_s (16 values per pair of blocks) from one row's d and s.
void spread_pairs(const float* d, const int32_t* s, int64_t nblk, float* pair_d, int32_t* pair_s) {
    for (int64_t p = 0; p < nblk / 2; ++p) {
        for (int i = 0; i < 16; ++i) {
            pair_d[16 * p + i] = d[2 * p + i / 8];
            pair_s[16 * p + i] = s[2 * p + i / 8];
        }
    }
}

template <dtype T>
constexpr size_t block_bytes = T == dtype::q8_0 ? 34 : 18;

inline uint16_t load_h(const uint8_t* blk) {
    uint16_t h;
    std::memcpy(&h, blk, 2);
    return h;
}

// ---- scalar: the reference arithmetic of the other paths --------------------------------------------------

template <dtype T>
int32_t block_dot(const uint8_t* blk, const int8_t* x, int32_t neg_xsum) {
    int32_t s = 0;
    if constexpr (T == dtype::q8_0) {
        // The product through int16 (exact: |w x| <= 128 * 127): GCC 12 at -march=native turns the plain
        // int8 x int8 sum into vpdpbusd, which reads one operand as unsigned (wrong for negative weights).
        for (int i = 0; i < qk; ++i) s += int16_t(int8_t(blk[2 + i]) * x[i]);
    } else {
        for (int j = 0; j < 16; ++j) s += int32_t(blk[2 + j] & 0x0f) * x[j] + int32_t(blk[2 + j] >> 4) * x[j + 16];
        s += 8 * neg_xsum;
    }
    return s;
}

struct scalar_kernels {
    static constexpr int tile_m = 4, tile_n = 2;
    // out[mb * ldo + nb] = dot(weight row nb, activation row mb) for an MB x NB tile; weight rows rb bytes apart.
    template <dtype T, int MB, int NB>
    static void tile(const uint8_t* w, size_t rb, const acts& x, float* out, int64_t ldo) {
        float acc[MB][NB] = {};
        for (int64_t b = 0; b < x.nblk; ++b) {
            for (int nb = 0; nb < NB; ++nb) {
                const uint8_t* blk = w + size_t(nb) * rb + size_t(b) * block_bytes<T>;
                const float dw = fp16_to_fp32(load_h(blk));
                for (int mb = 0; mb < MB; ++mb) {
                    const acts a = x.row(mb);
                    acc[mb][nb] += float(block_dot<T>(blk, a.q + b * qk, a.s[b])) * (dw * a.d[b]);
                }
            }
        }
        for (int mb = 0; mb < MB; ++mb)
            for (int nb = 0; nb < NB; ++nb) out[mb * ldo + nb] = acc[mb][nb];
    }
};

#if defined(TANDEM_QUANT_AVX2)

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// A weight block in a 256-bit register, ready to meet any number of activation blocks. VNNI: one dpbusd in place
// of maddubs + madd (only where AVX512-VNNI with VL is compiled in).
template <dtype T, bool VNNI>
struct wblock;

template <bool VNNI>
struct wblock<dtype::q8_0, VNNI> {
    __m256i w;
    __m256i absw;
    explicit wblock(const uint8_t* blk) {
        w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        absw = _mm256_sign_epi8(w, w);
    }
    // 8 int32 partial sums of w . x
    __m256i dot(const int8_t* xq, int32_t) const {
        const __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)), w);
#if defined(TANDEM_QUANT_AVX512)
        if constexpr (VNNI) return _mm256_dpbusd_epi32(_mm256_setzero_si256(), absw, sx);
#endif
        // Pairs of products fit int16: <= 2 * 128 * 127.
        return _mm256_madd_epi16(_mm256_maddubs_epi16(absw, sx), _mm256_set1_epi16(1));
    }
};

template <bool VNNI>
struct wblock<dtype::q4_0, VNNI> {
    __m256i nib;  // bytes 0..15: elements 0..15 (low nibbles), bytes 16..31: elements 16..31 (high nibbles)
    explicit wblock(const uint8_t* blk) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
        const __m128i m = _mm_set1_epi8(0x0f);
        nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
    }
    // 8 int32 partial sums of (nibble - 8) . x: sum(nibble * x) - 8 * sum(x), the 8 spread as 1 per lane.
    __m256i dot(const int8_t* xq, int32_t neg_xsum) const {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
#if defined(TANDEM_QUANT_AVX512)
        if constexpr (VNNI) return _mm256_dpbusd_epi32(_mm256_set1_epi32(neg_xsum), nib, x);
#endif
        const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(nib, x), _mm256_set1_epi16(1));
        return _mm256_add_epi32(p32, _mm256_set1_epi32(neg_xsum));
    }
};

// The product of one weight block and one activation block as 8 float lanes.
template <dtype T, bool VNNI>
inline __m256 block_product(const wblock<T, VNNI>& wb, float dw, const acts& a, int64_t b) {
    return _mm256_mul_ps(_mm256_cvtepi32_ps(wb.dot(a.q + b * qk, a.s[b])), _mm256_set1_ps(dw * a.d[b]));
}

struct avx2_kernels {
    // 4 activation rows x 2 weight rows keeps 8 accumulators plus 2 unpacked Q8_0 blocks (w and |w|) and
    // temporaries inside the 16 AVX2 registers.
    static constexpr int tile_m = 4, tile_n = 2;
    template <dtype T, int MB, int NB>
    static void tile(const uint8_t* w, size_t rb, const acts& x, float* out, int64_t ldo) {
        __m256 acc[MB][NB];
        for (auto& r : acc)
            for (auto& a : r) a = _mm256_setzero_ps();
        for (int64_t b = 0; b < x.nblk; ++b) {
            for (int nb = 0; nb < NB; ++nb) {
                const uint8_t* blk = w + size_t(nb) * rb + size_t(b) * block_bytes<T>;
                const wblock<T, false> wb(blk);
                const float dw = _cvtsh_ss(load_h(blk));
                for (int mb = 0; mb < MB; ++mb) {
                    const acts a = x.row(mb);
                    acc[mb][nb] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(wb.dot(a.q + b * qk, a.s[b])),
                                                  _mm256_set1_ps(dw * a.d[b]), acc[mb][nb]);
                }
            }
        }
        for (int mb = 0; mb < MB; ++mb)
            for (int nb = 0; nb < NB; ++nb) out[mb * ldo + nb] = hsum(acc[mb][nb]);
    }
};

#endif  // TANDEM_QUANT_AVX2

#if defined(TANDEM_QUANT_AVX512)

// The zero-masking (maskz) forms with a full mask stand in for plain intrinsics that trip GCC 12's
// -Wuninitialized once inlined (GCC bug 105593, as in cpu_simd.h).
constexpr __mmask16 all16 = 0xffff;

// Lanes 0..7 = element 0 of p, lanes 8..15 = element 1: spreads a per-block value over its block's 8 lanes.
inline __m512i pair_index() { return _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1); }

// Two consecutive weight blocks (bb bytes apart) in one register, element order = the activations' order.
template <dtype T>
inline __m512i load_wpair(const uint8_t* blk) {
    constexpr size_t bb = block_bytes<T>;
    if constexpr (T == dtype::q8_0) {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + bb + 2));
        return _mm512_mask_broadcast_i64x4(_mm512_maskz_broadcast_i64x4(0x0f, lo), 0xf0, hi);
    } else {
        // Each block's 16 bytes twice, [b0 b0 b1 b1], then the low nibbles kept in the first copy and the high
        // nibbles shifted down in the second: elements 0..15, 16..31 of block 0, then of block 1.
        const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
        const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + bb + 2));
        const __m512i raw = _mm512_mask_broadcast_i32x4(_mm512_maskz_broadcast_i32x4(0x00ff, b0), 0xff00, b1);
        const __m512i shift = _mm512_setr_epi64(0, 0, 0x0004000400040004, 0x0004000400040004, 0, 0,
                                                0x0004000400040004, 0x0004000400040004);
        return _mm512_and_si512(_mm512_srlv_epi16(raw, shift), _mm512_set1_epi8(0x0f));
    }
}

// The scales of blocks b and b + 1 of NB weight rows (rb bytes apart) as floats: row nb's two at lanes 2 nb and
// 2 nb + 1 (NB <= 4). One conversion for all rows, in place of a scalar fp16 load per block and row.
template <dtype T, int NB>
inline __m512 load_scales(const uint8_t* blk, size_t rb) {
    __m128i h = _mm_setzero_si128();
    [&]<int... I>(std::integer_sequence<int, I...>) {
        ((h = _mm_insert_epi16(h, load_h(blk + I * rb), 2 * I),
          h = _mm_insert_epi16(h, load_h(blk + I * rb + block_bytes<T>), 2 * I + 1)),
         ...);
    }(std::make_integer_sequence<int, NB>{});
    return _mm512_maskz_cvtph_ps(all16, _mm256_zextsi128_si256(h));
}

// dw * dx of weight row R over the 16 lanes of a block pair, from the products of load_scales and [dx0 dx1 ...].
template <int R>
inline __m512 pair_scale(__m512 products) {
    return _mm512_maskz_permutexvar_ps(all16, _mm512_add_epi32(pair_index(), _mm512_set1_epi32(2 * R)), products);
}

struct avx512_kernels {
    // 32 registers: MB x NB accumulators, 3 per activation row (bytes, scales, sums) and a few temporaries.
    static constexpr int tile_m = 4, tile_n = 2;
    template <dtype T, int MB, int NB>
    static void tile(const uint8_t* w, size_t rb, const acts& x, float* out, int64_t ldo) {
        if constexpr (MB == 1 && NB == 1) {
            if (x.pair_d != nullptr) {
                *out = gemv_row<T>(w, x);
                return;
            }
        }
        static_assert(NB <= 4, "load_scales packs at most 4 rows");
        constexpr size_t bb = block_bytes<T>;
        __m512 acc[MB][NB];
        for (auto& r : acc)
            for (auto& a : r) a = _mm512_setzero_ps();
        const __m512i idx = pair_index();
        int64_t b = 0;
        for (; b + 2 <= x.nblk; b += 2) {
            __m512i xv[MB], xs[MB];
            __m512 dx[MB];  // [dx0 dx1] repeated
            for (int mb = 0; mb < MB; ++mb) {
                const acts a = x.row(mb);
                xv[mb] = _mm512_loadu_si512(a.q + b * qk);
                double d2;
                std::memcpy(&d2, a.d + b, 8);
                dx[mb] = _mm512_castpd_ps(_mm512_set1_pd(d2));
                if constexpr (T == dtype::q4_0) {
                    // -sum(x) in each of a block's 8 lanes: the -8 * sum(x) of the nibble offset.
                    const __m128i s2 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.s + b));
                    xs[mb] = _mm512_maskz_permutexvar_epi32(all16, idx, _mm512_zextsi128_si512(s2));
                }
            }
            const uint8_t* blk0 = w + size_t(b) * bb;
            const __m512 dw = load_scales<T, NB>(blk0, rb);
            __m512 scale[MB];
            for (int mb = 0; mb < MB; ++mb) scale[mb] = _mm512_mul_ps(dw, dx[mb]);
            [&]<int... N>(std::integer_sequence<int, N...>) {
                (row_pair<T, MB, N>(blk0 + size_t(N) * rb, xv, xs, scale, acc), ...);
            }(std::make_integer_sequence<int, NB>{});
        }
        if (b < x.nblk) {  // an odd last block: 256 bits
            for (int nb = 0; nb < NB; ++nb) {
                const uint8_t* blk = w + size_t(nb) * rb + size_t(b) * bb;
                const wblock<T, true> wb(blk);
                const float dw = _cvtsh_ss(load_h(blk));
                for (int mb = 0; mb < MB; ++mb) {
                    const __m256 p = block_product(wb, dw, x.row(mb), b);
                    const __m512 p16 = _mm512_castpd_ps(_mm512_maskz_broadcast_f64x4(0x0f, _mm256_castps_pd(p)));
                    acc[mb][nb] = _mm512_add_ps(acc[mb][nb], p16);  // p in the low 8 lanes
                }
            }
        }
        for (int mb = 0; mb < MB; ++mb)
            for (int nb = 0; nb < NB; ++nb) out[mb * ldo + nb] = simd::reduce_add(acc[mb][nb]);
    }

    // One weight row times one activation row (matrix-vector): nothing to share between rows, so the activation
    // side comes spread over its lanes already (acts::pair_d, pair_s), and two accumulators hide the FMA latency.
    template <dtype T>
    static float gemv_row(const uint8_t* w, const acts& x) {
        constexpr size_t bb = block_bytes<T>;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        int64_t b = 0;
        for (; b + 4 <= x.nblk; b += 4) {
            acc0 = pair_fma<T>(w + size_t(b) * bb, x, b, acc0);
            acc1 = pair_fma<T>(w + size_t(b + 2) * bb, x, b + 2, acc1);
        }
        if (b + 2 <= x.nblk) {
            acc0 = pair_fma<T>(w + size_t(b) * bb, x, b, acc0);
            b += 2;
        }
        float r = simd::reduce_add(_mm512_add_ps(acc0, acc1));
        if (b < x.nblk) {  // an odd last block
            const uint8_t* blk = w + size_t(b) * bb;
            r += hsum(block_product(wblock<T, true>(blk), _cvtsh_ss(load_h(blk)), x, b));
        }
        return r;
    }

    // acc + the 16 lanes of blocks b and b + 1 of one weight row (at blk) times one activation row.
    template <dtype T>
    static __m512 pair_fma(const uint8_t* blk, const acts& x, int64_t b, __m512 acc) {
        const __m512i wv = load_wpair<T>(blk);
        // Lanes 0..7 belong to block b, 8..15 to block b + 1.
        const __m256i h = _mm256_mask_set1_epi16(_mm256_set1_epi16(short(load_h(blk))), 0xff00,
                                                 short(load_h(blk + block_bytes<T>)));
        const __m512 scale = _mm512_mul_ps(_mm512_maskz_cvtph_ps(all16, h), _mm512_loadu_ps(x.pair_d + 8 * b));
        const __m512i xv = _mm512_loadu_si512(x.q + b * qk);
        __m512i d;
        if constexpr (T == dtype::q8_0) {
            const __m512i sx = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), _mm512_setzero_si512(), xv);
            d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(wv), sx);
        } else {
            d = _mm512_dpbusd_epi32(_mm512_loadu_si512(x.pair_s + 8 * b), wv, xv);
        }
        return _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, d), scale, acc);
    }

    // Weight row R's block pair at blk against the MB activation rows' pairs.
    template <dtype T, int MB, int R, int NB>
    static void row_pair(const uint8_t* blk, const __m512i* xv, const __m512i* xs, const __m512* scale,
                         __m512 (&acc)[MB][NB]) {
        const __m512i wv = load_wpair<T>(blk);
        if constexpr (T == dtype::q8_0) {
            // dpbusd multiplies unsigned by signed bytes: |w| times x with w's sign (|-128| = 128 unsigned).
            const __m512i absw = _mm512_abs_epi8(wv);
            const __mmask64 neg = _mm512_movepi8_mask(wv);
            for (int mb = 0; mb < MB; ++mb) {
                const __m512i sx = _mm512_mask_sub_epi8(xv[mb], neg, _mm512_setzero_si512(), xv[mb]);
                const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), absw, sx);
                acc[mb][R] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, d), pair_scale<R>(scale[mb]), acc[mb][R]);
            }
        } else {
            for (int mb = 0; mb < MB; ++mb) {
                const __m512i d = _mm512_dpbusd_epi32(xs[mb], wv, xv[mb]);
                acc[mb][R] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, d), pair_scale<R>(scale[mb]), acc[mb][R]);
            }
        }
    }
};

#endif  // TANDEM_QUANT_AVX512

// ---- the work split, shared by every path ---------------------------------------------------------------

template <typename K, dtype T, int MB>
void rows_block(const uint8_t* w, size_t rb, const acts& x, int64_t n0, int64_t n1, float* out, int64_t n) {
    int64_t j = n0;
    for (; j + K::tile_n <= n1; j += K::tile_n)
        K::template tile<T, MB, K::tile_n>(w + size_t(j) * rb, rb, x, out + j, n);
    for (; j < n1; ++j) K::template tile<T, MB, 1>(w + size_t(j) * rb, rb, x, out + j, n);
}

template <typename K, dtype T, int MB>
void all_rows(const uint8_t* w, size_t rb, const acts& x, int64_t n0, int64_t n1, float* out, int64_t n, int64_t m) {
    int64_t r = 0;
    for (; r + MB <= m; r += MB) rows_block<K, T, MB>(w, rb, x.row(r), n0, n1, out + r * n, n);
    if constexpr (MB > 1) {
        if (r < m) all_rows<K, T, MB - 1>(w, rb, x.row(r), n0, n1, out + r * n, n, m - r);
    }
}

template <typename K, dtype T>
void matmul_q(thread_pool& pool, const uint8_t* w, const acts& x, float* out, int64_t k, int64_t n, int64_t m) {
    const size_t rb = size_t(x.nblk) * block_bytes<T>;
    if (m == 1) {  // one weight row after the other: see the header comment
        pool.parallel_for(n, grain(k), [&](int64_t j0, int64_t j1) {
            for (int64_t j = j0; j < j1; ++j) K::template tile<T, 1, 1>(w + size_t(j) * rb, rb, x, out + j, n);
        });
        return;
    }
    constexpr int tn = K::tile_n;
    const int64_t groups = (n + tn - 1) / tn;
    pool.parallel_for(groups, grain(tn * k * m), [&](int64_t g0, int64_t g1) {
        const int64_t n0 = g0 * tn, n1 = std::min(n, g1 * tn);
        // Weight rows outermost in steps of tile_n, so those blocks stay in L1 while all activation rows pass.
        for (int64_t j = n0; j < n1; j += tn)
            all_rows<K, T, K::tile_m>(w, rb, x, j, std::min(n1, j + tn), out, n, m);
    });
}

template <dtype T>
void matmul_path(quant_path path, thread_pool& pool, const uint8_t* w, const acts& x, float* out, int64_t k,
                 int64_t n, int64_t m) {
#if defined(TANDEM_QUANT_AVX512)
    if (path == quant_path::avx512) return matmul_q<avx512_kernels, T>(pool, w, x, out, k, n, m);
#endif
#if defined(TANDEM_QUANT_AVX2)
    if (path == quant_path::avx2) return matmul_q<avx2_kernels, T>(pool, w, x, out, k, n, m);
#endif
    return matmul_q<scalar_kernels, T>(pool, w, x, out, k, n, m);
}

}  // namespace

bool quant_supported(dtype t) { return t == dtype::q8_0 || t == dtype::q4_0 || kquant_supported(t); }

void matmul_quant(thread_pool& pool, const tensor& w, const tensor& x, const tensor& out) {
    if (kquant_supported(w.type)) return matmul_kquant(pool, w, x, out);
    const int64_t k = w.ne[0], n = w.nrows(), m = x.nrows();
    if (!quant_supported(w.type)) {
        throw error(TANDEM_ERR_UNSUPPORTED, "cpu matmul: weight type " + std::string(dtype_name(w.type)));
    }
    if (k % qk != 0) {
        throw error(TANDEM_ERR_INTERNAL, "cpu matmul: " + std::string(dtype_name(w.type)) + " rows of " +
                                             std::to_string(k) + " elements are not whole blocks");
    }
    const quant_path path = chosen_path();
    float* op = out.host<float>();
    if (m == 0 || n == 0) return;
    if (k == 0) {
        std::fill(op, op + m * n, 0.f);
        return;
    }
    const int64_t nblk = k / qk;
    // One buffer per calling thread, grown and kept: no allocation per call in decode, and concurrent calls on
    // one backend (from different threads) still never share it. Layout: m * k int8, then scales, then sums.
    thread_local std::vector<uint8_t> scratch;
    const size_t q_bytes = size_t(m * k), d_bytes = size_t(m * nblk) * sizeof(float);
    // + pair_d and pair_s of one row for the avx512 matrix-vector kernel (16 values per 2 blocks each).
    const size_t need = q_bytes + 2 * d_bytes + 64 + size_t(nblk) * 16 * sizeof(float);
    if (scratch.size() < need) scratch.resize(need);
    auto* q = reinterpret_cast<int8_t*>(scratch.data());
    auto* d = reinterpret_cast<float*>(scratch.data() + (q_bytes + 63) / 64 * 64);
    auto* s = reinterpret_cast<int32_t*>(d + m * nblk);
    const float* xp = x.host<const float>();
    pool.parallel_for(m, grain(k * 4), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) quantize_row(path, xp + r * k, q + r * k, d + r * nblk, s + r * nblk, nblk);
    });
    acts xa{q, d, s, nblk};
    if (m == 1 && path == quant_path::avx512) {
        auto* pd = reinterpret_cast<float*>(s + nblk);
        auto* ps = reinterpret_cast<int32_t*>(pd + nblk / 2 * 16);
        spread_pairs(d, s, nblk, pd, ps);
        xa.pair_d = pd;
        xa.pair_s = ps;
    }
    const auto* wp = w.host<const uint8_t>();
    if (w.type == dtype::q8_0) return matmul_path<dtype::q8_0>(path, pool, wp, xa, op, k, n, m);
    return matmul_path<dtype::q4_0>(path, pool, wp, xa, op, k, n, m);
}

void get_rows_quant(thread_pool& pool, const tensor& table, const int32_t* ids, const tensor& out) {
    const int64_t k = table.ne[0], m = out.nrows();
    const size_t rb = table.row_bytes();
    // One row at a time from its blocks (any type dequantize_row knows, K-quants included): no more than the
    // requested rows is ever dequantized.
    pool.parallel_for(m, grain(k), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
            dequantize_row(table.type, table.host<const uint8_t>() + size_t(ids[r]) * rb, out.host<float>() + r * k, k);
        }
    });
}

}  // namespace tandem::cpu
