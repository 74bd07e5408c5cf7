// Quantized matmul and get_rows for the cpu backend: Q8_0 and Q4_0 weights read in their packed blocks
// (block layouts in backends/cpu/dequant.cpp); no dequantized copy of the matrix is ever made.
//
// Inner loop: each call first quantizes the activation rows to Q8 blocks (32 int8 + an f32 scale + the sum of
// the 32 int8), then every weight block against an activation block is an integer dot product of 32 bytes:
//   Q8_0 (int8 x int8):   _mm256_maddubs_epi16 multiplies unsigned by signed bytes, so it takes |w| and x with
//                         w's sign moved onto it (_mm256_sign_epi8); pairs of products fit int16 (<= 2*128*127).
//   Q4_0 (nibble x int8): the nibbles 0..15 are already unsigned and go to maddubs as they are; the -8 offset
//                         is applied once per block as -8 * sum(x_q) (the precomputed activation sum).
// _mm256_madd_epi16 with ones widens to 8 int32 lanes, converted to float and scaled by d_w * d_x in one FMA.
// Why: decode is bound by streaming the weights; int8 products use 4x fewer instructions per weight than
// dequantizing to f32 and FMA-ing, so one core keeps up with memory. Quantizing the activations is the price:
// about 0.4% relative error per element (half a step of 1/127 of the block maximum), see the harness tolerance.
// Without AVX2 the same blocks go through a scalar loop with identical integer arithmetic.
// Work split: output rows (weight rows) over the thread pool in groups of tile_n; each group reads a weight
// block once for a tile of up to tile_m activation rows (matrix-matrix), or tile_n weight rows for one
// activation row (matrix-vector).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/dequant.h"
#include "engine/error.h"

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define TANDEM_QUANT_AVX2 1
#endif

namespace tandem::cpu {

namespace {

constexpr int qk = 32;  // elements per block, both types

// One activation block: the Q8 quantization of 32 floats, kept in f32 scale (no fp16 rounding needed).
struct act_block {
    float d;      // x ~= d * q
    int32_t sum;  // sum of q, for the Q4_0 offset
    int8_t q[qk];
};

void quantize_activations(const float* x, act_block* out, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, x += qk) {
        float amax = 0.f;
        for (int i = 0; i < qk; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
        int32_t s = 0;
        for (int i = 0; i < qk; ++i) {
            const int v = int(std::nearbyint(std::min(127.f, std::max(-127.f, x[i] * id))));
            out[b].q[i] = int8_t(v);
            s += v;
        }
        out[b].d = d;
        out[b].sum = s;
    }
}

template <dtype T>
constexpr size_t block_bytes = T == dtype::q8_0 ? 34 : 18;

inline float load_d(const uint8_t* blk) {
    uint16_t h;
    std::memcpy(&h, blk, 2);
#if defined(TANDEM_QUANT_AVX2)
    return _cvtsh_ss(h);
#else
    return fp16_to_fp32(h);
#endif
}

#if defined(TANDEM_QUANT_AVX2)

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// A weight block in registers, ready to meet any number of activation blocks.
template <dtype T>
struct wblock;

template <>
struct wblock<dtype::q8_0> {
    __m256i w;
    __m256i absw;
    explicit wblock(const uint8_t* blk) {
        w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        absw = _mm256_sign_epi8(w, w);
    }
    // 8 int32 partial sums of w . x
    __m256i dot(const act_block& a) const {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q));
        const __m256i p16 = _mm256_maddubs_epi16(absw, _mm256_sign_epi8(x, w));
        return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    }
};

template <>
struct wblock<dtype::q4_0> {
    __m256i nib;  // bytes 0..15: elements 0..15 (low nibbles), bytes 16..31: elements 16..31 (high nibbles)
    explicit wblock(const uint8_t* blk) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
        const __m128i m = _mm_set1_epi8(0x0f);
        nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
    }
    // 8 int32 partial sums of (nibble - 8) . x: sum(nibble * x) - 8 * sum(x), the 8 spread as 1 per lane.
    __m256i dot(const act_block& a) const {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q));
        const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(nib, x), _mm256_set1_epi16(1));
        return _mm256_sub_epi32(p32, _mm256_set1_epi32(a.sum));
    }
};

// out[mb * ldo + nb] = dot(weight row nb, activation row mb) for an MB x NB tile. Weight rows are row_bytes
// apart, activation rows nblk blocks apart.
template <dtype T, int MB, int NB>
void tile(const uint8_t* w, size_t row_bytes, const act_block* x, int64_t nblk, float* out, int64_t ldo) {
    __m256 acc[MB][NB];
    for (auto& r : acc)
        for (auto& a : r) a = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; ++b) {
        for (int nb = 0; nb < NB; ++nb) {
            const uint8_t* blk = w + size_t(nb) * row_bytes + size_t(b) * block_bytes<T>;
            const wblock<T> wb(blk);
            const float dw = load_d(blk);
            for (int mb = 0; mb < MB; ++mb) {
                const act_block& a = x[mb * nblk + b];
                acc[mb][nb] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(wb.dot(a)), _mm256_set1_ps(dw * a.d), acc[mb][nb]);
            }
        }
    }
    for (int mb = 0; mb < MB; ++mb)
        for (int nb = 0; nb < NB; ++nb) out[mb * ldo + nb] = hsum(acc[mb][nb]);
}

#else  // scalar fallback: the same integer arithmetic

template <dtype T>
int32_t block_dot(const uint8_t* blk, const act_block& a) {
    int32_t s = 0;
    if constexpr (T == dtype::q8_0) {
        for (int i = 0; i < qk; ++i) s += int32_t(int8_t(blk[2 + i])) * a.q[i];
    } else {
        for (int j = 0; j < 16; ++j) {
            s += int32_t(blk[2 + j] & 0x0f) * a.q[j] + int32_t(blk[2 + j] >> 4) * a.q[j + 16];
        }
        s -= 8 * a.sum;
    }
    return s;
}

template <dtype T, int MB, int NB>
void tile(const uint8_t* w, size_t row_bytes, const act_block* x, int64_t nblk, float* out, int64_t ldo) {
    float acc[MB][NB] = {};
    for (int64_t b = 0; b < nblk; ++b) {
        for (int nb = 0; nb < NB; ++nb) {
            const uint8_t* blk = w + size_t(nb) * row_bytes + size_t(b) * block_bytes<T>;
            const float dw = load_d(blk);
            for (int mb = 0; mb < MB; ++mb) {
                const act_block& a = x[mb * nblk + b];
                acc[mb][nb] += float(block_dot<T>(blk, a)) * (dw * a.d);
            }
        }
    }
    for (int mb = 0; mb < MB; ++mb)
        for (int nb = 0; nb < NB; ++nb) out[mb * ldo + nb] = acc[mb][nb];
}

#endif

// Tiles: 4 activation rows x 2 weight rows keeps 8 accumulators plus 2 unpacked Q8_0 blocks (w and |w|) and
// temporaries inside the 16 AVX2 registers; one activation row reads 4 weight rows at once so that several
// independent block streams are in flight (memory-level parallelism for the GEMV).
constexpr int tile_m = 4, tile_n = 2, gemv_n = 4;

template <dtype T, int MB>
void rows_block(const uint8_t* w, size_t rb, const act_block* x, int64_t nblk, int64_t n0, int64_t n1, float* out,
                int64_t n) {
    int64_t j = n0;
    for (; j + tile_n <= n1; j += tile_n) tile<T, MB, tile_n>(w + size_t(j) * rb, rb, x, nblk, out + j, n);
    for (; j < n1; ++j) tile<T, MB, 1>(w + size_t(j) * rb, rb, x, nblk, out + j, n);
}

template <dtype T, int MB>
void all_rows(const uint8_t* w, size_t rb, const act_block* x, int64_t nblk, int64_t n0, int64_t n1, float* out,
              int64_t n, int64_t m) {
    int64_t r = 0;
    for (; r + MB <= m; r += MB) rows_block<T, MB>(w, rb, x + r * nblk, nblk, n0, n1, out + r * n, n);
    if constexpr (MB > 1) {
        if (r < m) all_rows<T, MB - 1>(w, rb, x + r * nblk, nblk, n0, n1, out + r * n, n, m - r);
    }
}

template <dtype T>
void matmul_q(thread_pool& pool, const uint8_t* w, const act_block* x, float* out, int64_t k, int64_t n, int64_t m) {
    const int64_t nblk = k / qk;
    const size_t rb = size_t(nblk) * block_bytes<T>;
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
    const int64_t groups = (n + tile_n - 1) / tile_n;
    pool.parallel_for(groups, grain(tile_n * k * m), [&](int64_t g0, int64_t g1) {
        const int64_t n0 = g0 * tile_n, n1 = std::min(n, g1 * tile_n);
        // Weight rows outermost in steps of tile_n, so those blocks stay in L1 while all activation rows pass.
        for (int64_t j = n0; j < n1; j += tile_n)
            all_rows<T, tile_m>(w, rb, x, nblk, j, std::min(n1, j + tile_n), out, n, m);
    });
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
    float* op = out.host<float>();
    if (m == 0 || n == 0) return;
    if (k == 0) {
        std::fill(op, op + m * n, 0.f);
        return;
    }
    const int64_t nblk = k / qk;
    std::vector<act_block> xq(size_t(m * nblk));  // per call, so concurrent calls on one backend stay safe
    const float* xp = x.host<const float>();
    pool.parallel_for(m, grain(k * 4), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) quantize_activations(xp + r * k, xq.data() + r * nblk, nblk);
    });
    const auto* wp = w.host<const uint8_t>();
    if (w.type == dtype::q8_0) return matmul_q<dtype::q8_0>(pool, wp, xq.data(), op, k, n, m);
    return matmul_q<dtype::q4_0>(pool, wp, xq.data(), op, k, n, m);
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
