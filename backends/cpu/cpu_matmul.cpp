// matmul for the cpu backend: out[M, N] = x[M, K] * w[N, K]^T.
// f32 weights with many rows (prefill) go to OpenBLAS SGEMM; decode, verification batches and f16 weights
// use our own kernel, parallel over output columns n, reading each weight row once per register tile of
// activation rows. f32 weights with short rows (small models) take a panel kernel for every batch of rows.
#include <cblas.h>

#include <algorithm>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/cpu_simd.h"
#include "engine/error.h"

namespace tandem::cpu {

namespace {

// Register tiles: tile_m activation rows x tile_n weight rows of accumulators, plus tile_n weight vectors
// and one activation vector, must fit the register file: 2 x 5 uses all 16 AVX2 registers (the fastest of
// the shapes measured on Zen 3/4: 2x4, 4x3, 6x2, 3x3, 4x4); AVX-512 has 32 and takes 4 x 4 (not measured:
// no AVX-512 machine was at hand). One activation row (decode GEMV) reads 8 weight rows at once.
#if defined(__AVX512F__)
constexpr int tile_m = 4, tile_n = 4;
#else
constexpr int tile_m = 2, tile_n = 5;
#endif
constexpr int gemv_n = 8;

// f32 weights go to OpenBLAS SGEMM from this many activation rows on; below, our kernel. Measured on 2
// threads (a loaded 2-vCPU Zen 3/4 VM, so roughly): K=768 N=2048, M=2: 155 vs 999 us, M=16: 637 vs 994 us,
// M=64: about even, M=128: 5.5 vs 4.9 ms, M=512: 34 vs 25 ms. For one row (GEMV) cblas_sgemv was faster on
// L3-resident weights (768x2048: 44-55 vs 65-103 us) but slower on DRAM-resident ones (2048x5632: 1.7 vs
// 1.3 ms; 768x32000: 6.6 vs 3.7 ms), and keeping decode on our pool avoids OpenBLAS's spinning threads
// competing with ours between ops.
constexpr int64_t blas_min_rows = 64;

// Keeps v in a register: without it GCC folds a reused load into every FMA that uses it, and the extra
// loads, not the FMAs, then limit the tile (measured: up to 2x slower depending on the tile shape).
template <typename V>
inline void pin_register(V& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__AVX512F__)
    asm("" : "+v"(v));  // "v": any of the 32 AVX-512 registers
#elif defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__AVX2__)
    asm("" : "+x"(v));
#else
    (void)v;
#endif
}

// out[mb][nb] = dot(x row mb, w row nb) for an MB x NB tile. w rows are k apart; x rows are k apart;
// out rows are ldo apart.
template <int MB, int NB, typename WT>
void tile(const WT* w, const float* x, int64_t k, float* out, int64_t ldo) {
    using namespace simd;
    vf acc[MB][NB];
    for (auto& row : acc)
        for (auto& a : row) a = zero();
    int64_t i = 0;
    for (; i + width <= k; i += width) {
        vf wv[NB];
        for (int nb = 0; nb < NB; ++nb) {
            wv[nb] = load(w + nb * k + i);
            if constexpr (MB > 1) pin_register(wv[nb]);  // one row: each weight vector is used once
        }
        for (int mb = 0; mb < MB; ++mb) {
            vf xv = load(x + mb * k + i);
            pin_register(xv);
            for (int nb = 0; nb < NB; ++nb) acc[mb][nb] = fma(xv, wv[nb], acc[mb][nb]);
        }
    }
    for (int mb = 0; mb < MB; ++mb) {
        for (int nb = 0; nb < NB; ++nb) {
            float s = reduce_add(acc[mb][nb]);
            for (int64_t j = i; j < k; ++j) s += to_f32(w[nb * k + j]) * x[mb * k + j];
            out[mb * ldo + nb] = s;
        }
    }
}

// Output columns [n0, n1) for all rows of x, weight rows outermost so each stays in L1 while the
// activation rows stream past it.
template <int MB, typename WT>
void rows_block(const WT* w, const float* x, int64_t k, int64_t n0, int64_t n1, float* out, int64_t n) {
    int64_t j = n0;
    for (; j + tile_n <= n1; j += tile_n) tile<MB, tile_n>(w + j * k, x, k, out + j, n);
    for (; j < n1; ++j) tile<MB, 1>(w + j * k, x, k, out + j, n);
}

// Rows [r, m) of x in blocks of MB, then the remainder with smaller blocks.
template <int MB, typename WT>
void all_rows(const WT* w, const float* x, int64_t k, int64_t j0, int64_t j1, float* out, int64_t n, int64_t m) {
    int64_t r = 0;
    for (; r + MB <= m; r += MB) rows_block<MB>(w, x + r * k, k, j0, j1, out + r * n, n);
    if constexpr (MB > 1) {
        if (r < m) all_rows<MB - 1>(w, x + r * k, k, j0, j1, out + r * n, n, m - r);
    }
}

template <typename WT>
void matmul_own(thread_pool& pool, const WT* w, const float* x, float* out, int64_t k, int64_t n, int64_t m) {
    if (m == 1) {
        const int64_t groups = (n + gemv_n - 1) / gemv_n;
        pool.parallel_for(groups, grain(gemv_n * k), [&](int64_t g0, int64_t g1) {
            const int64_t n1 = std::min(n, g1 * gemv_n);
            int64_t j = g0 * gemv_n;
            for (; j + gemv_n <= n1; j += gemv_n) tile<1, gemv_n>(w + j * k, x, k, out + j, n);
            for (; j < n1; ++j) tile<1, 1>(w + j * k, x, k, out + j, n);
        });
        return;
    }
    const int64_t groups = (n + tile_n - 1) / tile_n;
    pool.parallel_for(groups, grain(tile_n * k * m), [&](int64_t g0, int64_t g1) {
        const int64_t n0 = g0 * tile_n, n1 = std::min(n, g1 * tile_n);
        for (int64_t j = n0; j < n1; j += tile_n) all_rows<tile_m>(w, x, k, j, std::min(n1, j + tile_n), out, n, m);
    });
}

// f32 weights with rows of at most panel_max_k (small models: stories260K has k = 64 and 172) against two or more
// activation rows. With k that short, SGEMM's packing, its pass zeroing C and its spinning threads cost more than
// the products (a 396-row verification pass of stories260K: OpenBLAS about half of the pass), and matmul_own's
// horizontal sums at the end of every tile are a large part of its k/width steps. Here each work item packs the
// weights of panel_n output columns once, {k, panel_n}, and multiplies panel_mr activation rows at a time by
// broadcasting x[r][kk] against whole vectors of the panel: 2 x panel_mr accumulators, no horizontal sums.
constexpr int64_t panel_max_k = 256;
constexpr int64_t panel_n = 2 * simd::width;
#if defined(__AVX512F__)
constexpr int panel_mr = 8;  // 16 accumulators + 2 panel vectors + 1 broadcast of the 32 registers
#else
constexpr int panel_mr = 6;  // 12 + 2 + 1 of the 16 AVX2 registers
#endif

// panel[kk][c] = w[n0 + c][kk] for c < cols, 0 for cols <= c < panel_n.
void pack_panel(const float* w, int64_t k, int64_t n0, int64_t cols, float* panel) {
    int64_t c = 0;
    if (k % 8 == 0) {
        for (; c + 8 <= cols; c += 8)
            for (int64_t kk = 0; kk < k; kk += 8)
                simd::transpose_8x8(w + (n0 + c) * k + kk, k, panel + kk * panel_n + c, panel_n);
    }
    for (; c < panel_n; ++c)
        for (int64_t kk = 0; kk < k; ++kk) panel[kk * panel_n + c] = c < cols ? w[(n0 + c) * k + kk] : 0.f;
}

// out[r][c] = sum_kk x[r][kk] * panel[kk][c] for r < MR, c < cols; x rows k apart, out rows ldo apart.
template <int MR>
void panel_tile(const float* x, int64_t k, const float* panel, float* out, int64_t ldo, int64_t cols) {
    using namespace simd;
    vf acc[MR][2];
    for (auto& a : acc) a[0] = a[1] = zero();
    for (int64_t kk = 0; kk < k; ++kk) {
        const vf w0 = load(panel + kk * panel_n), w1 = load(panel + kk * panel_n + width);
        for (int r = 0; r < MR; ++r) {
            const vf xv = set1(x[r * k + kk]);
            acc[r][0] = fma(xv, w0, acc[r][0]);
            acc[r][1] = fma(xv, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < MR; ++r) {
        if (cols == panel_n) {
            store(out + r * ldo, acc[r][0]);
            store(out + r * ldo + width, acc[r][1]);
        } else {
            alignas(64) float t[panel_n];
            store(t, acc[r][0]);
            store(t + width, acc[r][1]);
            std::copy(t, t + cols, out + r * ldo);
        }
    }
}

// panel_tile for m <= MR rows (the last block of a batch).
template <int MR>
void panel_block(const float* x, int64_t k, const float* panel, float* out, int64_t ldo, int64_t cols, int64_t m) {
    if (m == MR) return panel_tile<MR>(x, k, panel, out, ldo, cols);
    if constexpr (MR > 1) panel_block<MR - 1>(x, k, panel, out, ldo, cols, m);
}

void matmul_panels(thread_pool& pool, const float* w, const float* x, float* out, int64_t k, int64_t n, int64_t m) {
    const int64_t n_panels = (n + panel_n - 1) / panel_n, n_blocks = (m + panel_mr - 1) / panel_mr;
    // Items are (panel, run of row blocks), panel-major: a few panels (kv projections: one) still give every
    // thread work; each item packs its panel once.
    const int64_t runs = std::clamp<int64_t>((int64_t(pool.size()) * 4 + n_panels - 1) / n_panels, 1, n_blocks);
    const int64_t per_run = (n_blocks + runs - 1) / runs;
    pool.parallel_for(n_panels * runs, grain(per_run * panel_mr * panel_n * k / 8), [&](int64_t i0, int64_t i1) {
        alignas(64) float panel[panel_max_k * panel_n];
        int64_t packed = -1;
        for (int64_t i = i0; i < i1; ++i) {
            const int64_t p = i / runs, b0 = (i % runs) * per_run, b1 = std::min(n_blocks, b0 + per_run);
            const int64_t n0 = p * panel_n, cols = std::min(panel_n, n - n0);
            if (p != packed) pack_panel(w, k, n0, cols, panel), packed = p;
            for (int64_t b = b0; b < b1; ++b) {
                const int64_t r0 = b * panel_mr;
                panel_block<panel_mr>(x + r0 * k, k, panel, out + r0 * n + n0, n, cols,
                                      std::min<int64_t>(panel_mr, m - r0));
            }
        }
    });
}

}  // namespace

void set_blas_threads(int n) { openblas_set_num_threads(n); }

void matmul(thread_pool& pool, const tensor& w, const tensor& x, const tensor& out) {
    const int64_t k = w.ne[0], n = w.nrows(), m = x.nrows();
    const float* xp = x.host<const float>();
    float* op = out.host<float>();
    if (m == 0 || n == 0) return;
    if (k == 0) {
        std::fill(op, op + m * n, 0.f);
        return;
    }
    switch (w.type) {
        case dtype::f32:
            if (m > 1 && k <= panel_max_k) return matmul_panels(pool, w.host<const float>(), xp, op, k, n, m);
            if (m < blas_min_rows) return matmul_own(pool, w.host<const float>(), xp, op, k, n, m);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(m), blasint(n), blasint(k), 1.f, xp,
                        blasint(k), w.host<const float>(), blasint(k), 0.f, op, blasint(n));
            return;
        case dtype::f16:
            return matmul_own(pool, w.host<const uint16_t>(), xp, op, k, n, m);
        default:
            throw error(TANDEM_ERR_UNSUPPORTED, "cpu matmul: weight type " + std::string(dtype_name(w.type)));
    }
}

}  // namespace tandem::cpu
