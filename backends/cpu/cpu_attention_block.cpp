// Attention forward and backward for query rows that read one contiguous key run from its start (prefill chunks,
// training batches: row t of a causal sequence sees slots [begin, begin + t + 1)). Per (run, kv head) the keys (and
// values) are transposed once into {D, L} f32 tiles, so the inner loops run along the keys with full vectors
// whatever the head size (an 8-wide head fills half an AVX-512 vector along D), and up to four (row, head) pairs
// share each tile load. The backward accumulates a run's dk, dv in tiles owned by one thread: no reduction race,
// and no scan of every row for every slot.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/cpu_simd.h"
#include "engine/error.h"

namespace tandem::cpu {

namespace {

constexpr int pair_block = 4;      // (row, head) pairs per pass over a tile: 4 x 4 vector accumulators
constexpr int64_t tile_rows = 32;  // forward: query rows per work item (each item transposes its keys once)
// Tiles are {D, L} f32 (the forward needs one or two, the backward four): a few MiB per thread at most; longer runs
// take the per-row paths.
constexpr int64_t max_tile_elements = int64_t(1) << 19;

int64_t padded(int64_t n) { return (n + simd::width - 1) / simd::width * simd::width; }

// Calls f with std::integral_constant<int, nr> so the kernels below get their pair count at compile time.
template <typename F>
void with_pairs(int nr, F&& f) {
    switch (nr) {
        case 1:
            return f(std::integral_constant<int, 1>{});
        case 2:
            return f(std::integral_constant<int, 2>{});
        case 3:
            return f(std::integral_constant<int, 3>{});
        default:
            return f(std::integral_constant<int, 4>{});
    }
}

// t[i][j] = x[j][i] (x rows `stride` apart, already offset to the run's first slot and kv head) for j < len, and
// zeros for len <= j < ld, so the kernels may read whole vectors past the run.
template <typename CT>
void transpose_in(const CT* x, int64_t stride, int64_t len, int64_t d, float* t, int64_t ld) {
    for (int64_t i = 0; i < d; ++i) std::fill(t + i * ld + len, t + (i + 1) * ld, 0.f);
    int64_t j0 = 0;
    // Head sizes that are a multiple of 8 (all in practice) move in 8 x 8 blocks, the rest of the run one by one.
    if (d % 8 == 0) {
        for (; j0 + 8 <= len; j0 += 8)
            for (int64_t i = 0; i < d; i += 8) simd::transpose_8x8(x + j0 * stride + i, stride, t + i * ld + j0, ld);
    }
    for (int64_t j = j0; j < len; ++j) {
        const CT* r = x + j * stride;
        for (int64_t i = 0; i < d; ++i) t[i * ld + j] = simd::to_f32(r[i]);
    }
}

// x[j][i] = t[i][j] for j < len.
void transpose_out(const float* t, int64_t ld, int64_t len, int64_t d, float* x, int64_t stride) {
    for (int64_t j = 0; j < len; ++j) {
        float* r = x + j * stride;
        for (int64_t i = 0; i < d; ++i) r[i] = t[i * ld + j];
    }
}

// s_r[j] = sum_i x_r[i] * t[i][j] for r < NR, j < n (a multiple of the width): every tile vector is loaded once for
// all NR rows, four key vectors per pass (4 * NR independent accumulators hide the FMA latency).
template <int NR>
void rows_by_tile(const float* const* x, const float* t, int64_t ld, int64_t d, int64_t n, float* s, int64_t lds) {
    using namespace simd;
    int64_t j = 0;
    for (; j + 4 * width <= n; j += 4 * width) {
        vf acc[NR][4];
        for (auto& a : acc)
            for (auto& v : a) v = zero();
        for (int64_t i = 0; i < d; ++i) {
            const float* tr = t + i * ld + j;
            const vf t0 = load(tr), t1 = load(tr + width), t2 = load(tr + 2 * width), t3 = load(tr + 3 * width);
            for (int r = 0; r < NR; ++r) {
                const vf xv = set1(x[r][i]);
                acc[r][0] = fma(xv, t0, acc[r][0]);
                acc[r][1] = fma(xv, t1, acc[r][1]);
                acc[r][2] = fma(xv, t2, acc[r][2]);
                acc[r][3] = fma(xv, t3, acc[r][3]);
            }
        }
        for (int r = 0; r < NR; ++r)
            for (int c = 0; c < 4; ++c) store(s + r * lds + j + c * width, acc[r][c]);
    }
    for (; j < n; j += width) {
        vf acc[NR];
        for (auto& v : acc) v = zero();
        for (int64_t i = 0; i < d; ++i) {
            const vf tv = load(t + i * ld + j);
            for (int r = 0; r < NR; ++r) acc[r] = fma(set1(x[r][i]), tv, acc[r]);
        }
        for (int r = 0; r < NR; ++r) store(s + r * lds + j, acc[r]);
    }
}

// y_r[i0 + i] = sum_{j < n} a_r[j] * x[j][i0 + i] for NC vectors of D, with x rows `stride` apart: the NR x NC
// accumulators stay in registers while the rows of x stream past once.
template <int NR, int NC, typename CT>
void rows_by_rows_chunk(const float* const* a, const CT* x, int64_t stride, int64_t n, int64_t i0, float* const* y) {
    using namespace simd;
    vf acc[NR][NC];
    for (auto& r : acc)
        for (auto& v : r) v = zero();
    for (int64_t j = 0; j < n; ++j) {
        const CT* xr = x + j * stride + i0;
        vf xv[NC];
        for (int c = 0; c < NC; ++c) xv[c] = load(xr + c * width);
        for (int r = 0; r < NR; ++r) {
            const vf av = set1(a[r][j]);
            for (int c = 0; c < NC; ++c) acc[r][c] = fma(av, xv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < NR; ++r)
        for (int c = 0; c < NC; ++c) store(y[r] + i0 + c * width, acc[r][c]);
}

// y_r[i] = sum_{j < n} a_r[j] * x[j][i], x in its slot-major memory (d a multiple of the width).
template <int NR, typename CT>
void rows_by_rows(const float* const* a, const CT* x, int64_t stride, int64_t n, int64_t d, float* const* y) {
    int64_t i0 = 0;
    for (; i0 + 4 * simd::width <= d; i0 += 4 * simd::width) rows_by_rows_chunk<NR, 4>(a, x, stride, n, i0, y);
    for (; i0 < d; i0 += simd::width) rows_by_rows_chunk<NR, 1>(a, x, stride, n, i0, y);
}

#if defined(__AVX512F__)
// y[i] = the sum of the lanes of v[i], for 8 vectors: each folded to 256 bits, then two rounds of pairwise horizontal
// adds and one across the halves (about 25 instructions instead of 8 separate reductions of ~8).
inline void store_sums8(const __m512* v, float* y) {
    __m256 h[8];
    for (int i = 0; i < 8; ++i) h[i] = _mm256_add_ps(simd::low_half(v[i]), simd::high_half(v[i]));
    const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
    const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(h[4], h[5]), _mm256_hadd_ps(h[6], h[7]));
    _mm256_storeu_ps(y, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)));
}

// rows_by_tile_t below for R (1 or 2) rows and 8 values of D from i0: 8 R accumulators, each tile vector loaded once
// for the R rows, each a_r vector once for the 8 values.
template <int R>
void rows_by_tile_t8(const float* const* a, const float* t, int64_t ld, int64_t n, int64_t i0, float* const* y) {
    using namespace simd;
    vf acc[R][8];
    for (auto& r : acc)
        for (auto& v : r) v = zero();
    for (int64_t j = 0; j < n; j += width) {
        vf av[R];
        for (int r = 0; r < R; ++r) av[r] = load(a[r] + j);
        for (int i = 0; i < 8; ++i) {
            const vf tv = load(t + (i0 + i) * ld + j);
            for (int r = 0; r < R; ++r) acc[r][i] = fma(av[r], tv, acc[r][i]);
        }
    }
    for (int r = 0; r < R; ++r) store_sums8(acc[r], y[r] + i0);
}
#endif

// y_r[i] = sum_{j < n} a_r[j] * t[i][j] (n a multiple of the width): the same product from the transposed tile, for
// head sizes that are not a multiple of the width.
template <int NR>
void rows_by_tile_t(const float* const* a, const float* t, int64_t ld, int64_t n, int64_t d, float* const* y) {
    using namespace simd;
#if defined(__AVX512F__)
    if (d % 8 == 0) {  // 8-wide heads under AVX-512 (stories260K): rows in pairs, D in eights
        for (int64_t i0 = 0; i0 < d; i0 += 8) {
            int r = 0;
            for (; r + 2 <= NR; r += 2) rows_by_tile_t8<2>(a + r, t, ld, n, i0, y + r);
            if (r < NR) rows_by_tile_t8<1>(a + r, t, ld, n, i0, y + r);
        }
        return;
    }
#endif
    for (int64_t i = 0; i < d; ++i) {
        vf acc[NR];
        for (auto& v : acc) v = zero();
        for (int64_t j = 0; j < n; j += width) {
            const vf tv = load(t + i * ld + j);
            for (int r = 0; r < NR; ++r) acc[r] = fma(load(a[r] + j), tv, acc[r]);
        }
        for (int r = 0; r < NR; ++r) y[r][i] = reduce_add(acc[r]);
    }
}

// acc[i][j] += sum_r c_r[i] * a_r[j] for i < d, j < n (n a multiple of the width; acc is {d, ld}): one load and
// store of the accumulator per NR multiply-adds.
template <int NR>
void tile_add_outer(float* acc, int64_t ld, int64_t d, int64_t n, const float* const* c, const float* const* a) {
    using namespace simd;
    for (int64_t i = 0; i < d; ++i) {
        vf cv[NR];
        for (int r = 0; r < NR; ++r) cv[r] = set1(c[r][i]);
        float* row = acc + i * ld;
        for (int64_t j = 0; j < n; j += width) {
            vf v = load(row + j);
            for (int r = 0; r < NR; ++r) v = fma(cv[r], load(a[r] + j), v);
            store(row + j, v);
        }
    }
}

// x[j][i] += sum_r a_r[j] * c_r[i] for j < n, i < d (d a multiple of the width; x rows `stride` apart): the same
// update straight into slot-major memory, with the c_r chunk held in registers while the rows of x stream past.
template <int NR, int NC>
void rows_add_outer_chunk(float* x, int64_t stride, int64_t n, int64_t i0, const float* const* a,
                          const float* const* c) {
    using namespace simd;
    vf cv[NR][NC];
    for (int r = 0; r < NR; ++r)
        for (int k = 0; k < NC; ++k) cv[r][k] = load(c[r] + i0 + k * width);
    for (int64_t j = 0; j < n; ++j) {
        float* xr = x + j * stride + i0;
        vf acc[NC];
        for (int k = 0; k < NC; ++k) acc[k] = load(xr + k * width);
        for (int r = 0; r < NR; ++r) {
            const vf av = set1(a[r][j]);
            for (int k = 0; k < NC; ++k) acc[k] = fma(av, cv[r][k], acc[k]);
        }
        for (int k = 0; k < NC; ++k) store(xr + k * width, acc[k]);
    }
}

template <int NR>
void rows_add_outer(float* x, int64_t stride, int64_t n, int64_t d, const float* const* a, const float* const* c) {
    int64_t i0 = 0;
    for (; i0 + 4 * simd::width <= d; i0 += 4 * simd::width) rows_add_outer_chunk<NR, 4>(x, stride, n, i0, a, c);
    for (; i0 < d; i0 += simd::width) rows_add_outer_chunk<NR, 1>(x, stride, n, i0, a, c);
}

// s[j] = softmax(scale * s)[j] over j < len, and 0 for len <= j < n (n a multiple of the width).
void softmax_row(float* s, int64_t len, int64_t n, float scale) {
    using namespace simd;
    const vf sv = set1(scale);
    int64_t j = 0;
    vf mv = set1(-std::numeric_limits<float>::infinity());
    for (; j + width <= len; j += width) {
        const vf x = mul(load(s + j), sv);
        store(s + j, x);
        mv = simd::max(mv, x);
    }
    float best = reduce_max(mv);
    for (; j < len; ++j) best = std::max(best, s[j] *= scale);
    vf sum = zero();
    const vf shift = set1(-best);
    for (j = 0; j + width <= len; j += width) {
        const vf e = simd::exp(add(load(s + j), shift));
        store(s + j, e);
        sum = add(sum, e);
    }
    float total = reduce_add(sum);
    for (; j < len; ++j) total += (s[j] = std::exp(s[j] - best));
    const float inv = 1.f / total;
    const vf iv = set1(inv);
    for (j = 0; j + width <= len; j += width) store(s + j, mul(load(s + j), iv));
    for (; j < len; ++j) s[j] *= inv;
    std::fill(s + len, s + n, 0.f);
}

// One chunk's step of a (row, head) pair's online softmax. s[j] holds the scaled score of window slot c0 + j for
// j < n (a multiple of the width). The pair sees the slots before `run` and its tree offsets (increasing, in [run,
// len)); without a tree, run = len. Unseen slots get weight 0, seen ones exp(s[j] - the new running max); run_max
// and run_sum move on. Returns the factor for the pair's output so far (0: there was none, or it no longer counts).
float softmax_step(float* s, int64_t n, int64_t c0, int64_t run, const int32_t* tree, int64_t n_tree, float& run_max,
                   float& run_sum) {
    using namespace simd;
    constexpr float neg_inf = -std::numeric_limits<float>::infinity();
    const int64_t end = c0 + n;
    int64_t at = std::max(run, c0);  // the first slot not yet known to be seen
    for (int64_t k = 0; k < n_tree && at < end; ++k) {
        const int64_t o = tree[k];
        if (o < at) continue;
        std::fill(s + (at - c0), s + (std::min(o, end) - c0), neg_inf);
        at = o + 1;
    }
    if (at < end) std::fill(s + (at - c0), s + n, neg_inf);
    vf mv = set1(neg_inf);
    for (int64_t j = 0; j < n; j += width) mv = simd::max(mv, load(s + j));
    const float chunk_max = reduce_max(mv);
    if (chunk_max == neg_inf) {  // nothing seen in this chunk
        std::fill(s, s + n, 0.f);
        return 1.f;
    }
    const float new_max = std::max(run_max, chunk_max);
    const vf shift = set1(-new_max);
    vf sum = zero();
    for (int64_t j = 0; j < n; j += width) {
        const vf e = simd::exp(add(load(s + j), shift));
        store(s + j, e);
        sum = add(sum, e);
    }
    // exp(-inf) = 0 before the first seen slot; a factor that underflows to 0 drops an output that no longer counts.
    const float factor = std::exp(run_max - new_max);
    run_sum = run_sum * factor + reduce_add(sum);
    run_max = new_max;
    return factor;
}

// o[i] /= sum for i < d, or 0 for a (row, head) pair that saw nothing.
void normalize(float* o, int64_t d, float sum) {
    if (sum > 0.f) {
        const float inv = 1.f / sum;
        for (int64_t i = 0; i < d; ++i) o[i] *= inv;
    } else {
        std::fill(o, o + d, 0.f);
    }
}

struct heads {
    int64_t d, hq, hkv, group, stride;  // stride: elements per K/V row (d * hkv)
    float scale;
};

// Slots per chunk of a forward work item's window: the chunk's transposed keys and its values (and their transposed
// tile when the head size is not a multiple of the width) in ~256 KiB, an eighth of a 2 MiB L2, a multiple of the
// scores kernel's main step of four vectors.
template <typename CT>
int64_t chunk_slots(int64_t d, bool along_d) {
    const int64_t step = 4 * simd::width;
    const int64_t per_slot = d * int64_t(sizeof(float) + sizeof(CT) + (along_d ? 0 : sizeof(float)));
    return std::clamp<int64_t>((int64_t(1) << 18) / per_slot / step * step, step, 4096);
}

// The row stride of a transposed tile of n slots: padded, plus a vector when the rows would be a multiple of 512
// bytes apart. The scores kernel reads one vector group from each of the d rows in turn, and rows 4 KiB apart share
// one L1 set: a 9-row tree of the 1.1B shape (d = 64) after 1024 slots took 624 us a layer with rows 4 KiB apart
// and 498 us with them 4160 bytes apart.
int64_t tile_stride(int64_t n) {
    const int64_t ld = padded(n);
    return ld % (512 / int64_t(sizeof(float))) == 0 ? ld + simd::width : ld;
}

// One forward work item: query rows [t0, t1) of group g (increasing window) against kv head kvh, four (row, head)
// pairs at a time. A window longer than two chunks goes by in chunks whose keys (transposed) and values stay in L2
// while all the item's pairs go over them, with an online softmax across the chunks: each pair keeps a running max
// and sum, and its output so far is rescaled when the max grows. (Over whole windows the keys and values of a
// 9-row tree of the 1.1B shape outgrew L2: after 2000 slots a layer took 1.62 ms, against 0.96 ms in chunks.)
template <typename CT>
void forward_tile(const heads& H, const float* q, const CT* k, const CT* v, float* out, const run_group& g, int64_t kvh,
                  int64_t t0, int64_t t1, std::vector<float>& scratch) {
    const int64_t d = H.d, len = g.lens[size_t(t1 - 1)];
    const bool along_d = d % simd::width == 0;  // else the output is read from a transposed V tile too
    const int64_t max_chunk = chunk_slots<CT>(d, along_d);
    const int64_t C = len <= 2 * max_chunk ? padded(len) : max_chunk;  // slots per chunk
    const bool one_chunk = C >= len;
    const int64_t ld = tile_stride(C);
    const int64_t n_pairs = (t1 - t0) * H.group;
    scratch.resize(size_t(ld * (d * (along_d ? 1 : 2) + pair_block) + 2 * pair_block * d + 2 * n_pairs));
    float* kt = scratch.data();
    float* vt = kt + d * ld;
    float* s = vt + (along_d ? 0 : d * ld);  // [pair_block][ld]
    float* part = s + pair_block * ld;       // [pair_block][d]: a block's outputs over one chunk
    float* qs = part + pair_block * d;       // [pair_block][d]: a block's queries, scaled (scores come out scaled)
    float* run_max = qs + pair_block * d;
    float* run_sum = run_max + n_pairs;
    const bool tree = !g.runs.empty();
    auto row_of = [&](int64_t p) { return t0 + p / H.group; };
    auto out_of = [&](int64_t p) { return out + (g.rows[size_t(row_of(p))] * H.hq + kvh * H.group + p % H.group) * d; };
    std::fill(run_max, run_max + n_pairs, -std::numeric_limits<float>::infinity());
    std::fill(run_sum, run_sum + n_pairs, 0.f);
    const int64_t first = g.begin * H.stride + kvh * d;
    int64_t p_first = 0;  // pairs before it see nothing from this chunk on (their windows are shorter)
    for (int64_t c0 = 0; c0 < len; c0 += C) {
        const int64_t cl = std::min(C, len - c0);
        while (p_first < n_pairs && g.lens[size_t(row_of(p_first))] <= c0) ++p_first;
        const CT* kc = k + first + c0 * H.stride;
        const CT* vc = v + first + c0 * H.stride;
        transpose_in(kc, H.stride, cl, d, kt, ld);
        if (!along_d) transpose_in(vc, H.stride, cl, d, vt, ld);
        for (int64_t p0 = p_first; p0 < n_pairs; p0 += pair_block) {
            const int nr = int(std::min<int64_t>(pair_block, n_pairs - p0));
            const float* x[pair_block];
            float* a[pair_block];
            float* y[pair_block];
            for (int r = 0; r < nr; ++r) {
                float* o = out_of(p0 + r);
                const float* qp = q + (o - out);
                for (int64_t i = 0; i < d; ++i) qs[r * d + i] = qp[i] * H.scale;
                x[r] = qs + r * d, a[r] = s + r * ld, y[r] = one_chunk ? o : part + r * d;
            }
            // The block's extent in this chunk: its last row has the longest window.
            const int64_t lb = std::min(g.lens[size_t(row_of(p0 + nr - 1))] - c0, cl), lbp = padded(lb);
            with_pairs(nr, [&](auto c) { rows_by_tile<decltype(c)::value>(x, kt, ld, d, lbp, s, ld); });
            float factor[pair_block];
            for (int r = 0; r < nr; ++r) {
                const size_t t = size_t(row_of(p0 + r));
                const int64_t at = tree ? g.tree_at[t] : 0;
                factor[r] = softmax_step(a[r], lbp, c0, tree ? g.runs[t] : g.lens[t], g.tree.data() + at,
                                         tree ? g.tree_at[t + 1] - at : 0, run_max[p0 + r], run_sum[p0 + r]);
            }
            if (along_d)
                with_pairs(nr, [&](auto c) { rows_by_rows<decltype(c)::value>(a, vc, H.stride, lb, d, y); });
            else
                with_pairs(nr, [&](auto c) { rows_by_tile_t<decltype(c)::value>(a, vt, ld, lbp, d, y); });
            for (int r = 0; r < nr; ++r) {
                float* o = out_of(p0 + r);
                if (one_chunk) {
                    normalize(o, d, run_sum[p0 + r]);
                } else if (factor[r] == 0.f) {
                    std::copy(y[r], y[r] + d, o);
                } else {
                    for (int64_t i = 0; i < d; ++i) o[i] = o[i] * factor[r] + y[r][i];
                }
            }
        }
    }
    if (!one_chunk)
        for (int64_t p = 0; p < n_pairs; ++p) normalize(out_of(p), d, run_sum[p]);
}

template <typename CT>
void forward(thread_pool& pool, const heads& H, const float* q, const CT* k, const CT* v, float* out,
             const std::vector<run_group>& groups) {
    struct item {
        size_t g;
        int64_t kvh, t0, t1;
    };
    std::vector<item> items;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
        const int64_t n = int64_t(groups[gi].rows.size());
        for (int64_t kvh = 0; kvh < H.hkv; ++kvh)
            for (int64_t t0 = 0; t0 < n; t0 += tile_rows) items.push_back({gi, kvh, t0, std::min(n, t0 + tile_rows)});
    }
    pool.parallel_for(int64_t(items.size()), 1, [&](int64_t b, int64_t e) {
        thread_local std::vector<float> scratch;  // kept between calls: no allocation and zero fill per op
        for (int64_t i = b; i < e; ++i) {
            const item& it = items[size_t(i)];
            forward_tile(H, q, k, v, out, groups[it.g], it.kvh, it.t0, it.t1, scratch);
        }
    });
}

struct back_io {
    const float *q, *k, *v, *out, *d_out;
    float *dq, *dk, *dv;
};

// One backward work item: every row of group g against kv head kvh. Recomputes P from q and the key tile, then
// dq directly, and the group's dk, dv (owned by this item) by rank-NR updates: in place when the head size is a
// multiple of the width, else in transposed tiles written back at the end.
void backward_group(const heads& H, const back_io& io, const run_group& g, int64_t kvh, std::vector<float>& scratch) {
    const int64_t d = H.d, len = g.len, ld = padded(len);
    const bool along_d = d % simd::width == 0;
    const int64_t n_tiles = along_d ? 2 : 4;
    scratch.resize(size_t(ld * (n_tiles * d + 2 * pair_block)));
    float* kt = scratch.data();
    float* vt = kt + d * ld;
    float* dkt = vt + d * ld;  // (transposed accumulators: only when !along_d)
    float* dvt = dkt + d * ld;
    float* s = kt + n_tiles * d * ld;  // [pair_block][ld]: scores, then P
    float* ds = s + pair_block * ld;   // [pair_block][ld]: d_out . v, then scale * dS
    const int64_t first = g.begin * H.stride + kvh * d;
    transpose_in(io.k + first, H.stride, len, d, kt, ld);
    transpose_in(io.v + first, H.stride, len, d, vt, ld);
    if (along_d) {
        for (int64_t j = 0; j < len; ++j) {
            std::fill(io.dk + first + j * H.stride, io.dk + first + j * H.stride + d, 0.f);
            std::fill(io.dv + first + j * H.stride, io.dv + first + j * H.stride + d, 0.f);
        }
    } else {
        std::fill(dkt, dkt + 2 * d * ld, 0.f);
    }
    const int64_t n_pairs = int64_t(g.rows.size()) * H.group;
    for (int64_t p0 = 0; p0 < n_pairs; p0 += pair_block) {
        const int nr = int(std::min<int64_t>(pair_block, n_pairs - p0));
        const float *x[pair_block], *go[pair_block];
        float *p[pair_block], *dsr[pair_block], *y[pair_block];
        int64_t lens[pair_block];
        for (int r = 0; r < nr; ++r) {
            const int64_t t = (p0 + r) / H.group, h = kvh * H.group + (p0 + r) % H.group;
            const int64_t off = (g.rows[size_t(t)] * H.hq + h) * d;
            x[r] = io.q + off, go[r] = io.d_out + off, y[r] = io.dq + off;
            p[r] = s + r * ld, dsr[r] = ds + r * ld, lens[r] = g.lens[size_t(t)];
        }
        const int64_t lb = lens[nr - 1], lbp = padded(lb);
        with_pairs(nr, [&](auto c) {
            rows_by_tile<decltype(c)::value>(x, kt, ld, d, lbp, s, ld);
            rows_by_tile<decltype(c)::value>(go, vt, ld, d, lbp, ds, ld);
        });
        for (int r = 0; r < nr; ++r) {
            using namespace simd;
            softmax_row(p[r], lens[r], lbp, H.scale);
            // dS = P * (d_out . v - d_out . out), scaled once here for both dq and dk; 0 past the row (P = 0 there).
            const float off_r = -dot(go[r], io.out + (x[r] - io.q), d);
            const vf offv = set1(off_r), sc = set1(H.scale);
            for (int64_t j = 0; j < lbp; j += width)
                store(dsr[r] + j, mul(sc, mul(load(p[r] + j), add(load(dsr[r] + j), offv))));
        }
        with_pairs(nr, [&](auto c) {
            constexpr int n = decltype(c)::value;
            if (along_d) {
                rows_by_rows<n>(dsr, io.k + first, H.stride, lb, d, y);
                rows_add_outer<n>(io.dk + first, H.stride, lb, d, dsr, x);
                rows_add_outer<n>(io.dv + first, H.stride, lb, d, p, go);
            } else {
                rows_by_tile_t<n>(dsr, kt, ld, lbp, d, y);
                tile_add_outer<n>(dkt, ld, d, lbp, x, dsr);
                tile_add_outer<n>(dvt, ld, d, lbp, go, p);
            }
        });
    }
    if (!along_d) {
        transpose_out(dkt, ld, len, d, io.dk + first, H.stride);
        transpose_out(dvt, ld, len, d, io.dv + first, H.stride);
    }
}

}  // namespace

std::vector<run_group> group_runs(const int32_t* meta, int64_t m_rows, int64_t min_rows, int64_t d) {
    std::vector<int64_t> order;
    for (int64_t m = 0; m < m_rows; ++m)
        if (meta[4 * m + 2] < 0 && meta[4 * m + 1] > 0) order.push_back(m);
    // By run start, then length: each group's rows come out in increasing kv_len.
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return meta[4 * a] != meta[4 * b] ? meta[4 * a] < meta[4 * b] : meta[4 * a + 1] < meta[4 * b + 1];
    });
    std::vector<run_group> groups;
    for (size_t i = 0; i < order.size();) {
        size_t e = i;
        while (e < order.size() && meta[4 * order[e]] == meta[4 * order[i]]) ++e;
        run_group g;
        g.begin = meta[4 * order[i]], g.len = meta[4 * order[e - 1] + 1];
        if (int64_t(e - i) >= min_rows && d * padded(g.len) <= max_tile_elements) {
            for (size_t r = i; r < e; ++r) g.rows.push_back(order[r]), g.lens.push_back(meta[4 * order[r] + 1]);
            groups.push_back(std::move(g));
        }
        i = e;
    }
    return groups;
}

std::vector<run_group> group_windows(const int32_t* meta, int64_t m_rows, const int32_t* tree,
                                     const int64_t* tree_begin, int64_t min_rows, int64_t d) {
    struct row_window {
        int64_t row, begin, run, len;
    };
    std::vector<row_window> order;
    std::vector<int32_t> offsets;  // every joining row's tree offsets, sorted per row
    std::vector<int64_t> offsets_at(size_t(m_rows) + 1, 0);
    for (int64_t m = 0; m < m_rows; ++m) {
        offsets_at[size_t(m)] = int64_t(offsets.size());
        const int64_t begin = meta[4 * m], run = meta[4 * m + 1];
        const int32_t* t = tree + tree_begin[m];
        const int64_t n_tree = tree_begin[m + 1] - tree_begin[m];
        // A row that sees nothing keeps the per-row path (zero output); a row with no run may carry any begin.
        if ((run == 0 && n_tree == 0) || begin < 0) continue;
        const int64_t limit = run + std::max<int64_t>(run, 256);
        const size_t at = offsets.size();
        bool joins = true;
        for (int64_t k = 0; k < n_tree && joins; ++k) {
            const int64_t off = int64_t(t[k]) - begin;
            joins = off >= run && off < limit;
            offsets.push_back(int32_t(off));
        }
        std::sort(offsets.begin() + int64_t(at), offsets.end());
        // A slot seen twice (cpu_ref counts it twice) leaves the row to the per-row path, which does the same.
        joins = joins && std::adjacent_find(offsets.begin() + int64_t(at), offsets.end()) == offsets.end();
        if (!joins) {
            offsets.resize(at);
            continue;
        }
        order.push_back({m, begin, run, n_tree > 0 ? int64_t(offsets.back()) + 1 : run});
    }
    offsets_at[size_t(m_rows)] = int64_t(offsets.size());
    // By start, then window: each group's rows come out in increasing window.
    std::stable_sort(order.begin(), order.end(), [](const row_window& a, const row_window& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.len < b.len;
    });
    std::vector<run_group> groups;
    for (size_t i = 0; i < order.size();) {
        size_t e = i;
        while (e < order.size() && order[e].begin == order[i].begin) ++e;
        run_group g;
        g.begin = order[i].begin, g.len = order[e - 1].len;
        if (int64_t(e - i) >= min_rows && d * padded(g.len) <= max_tile_elements) {
            bool any_tree = false;
            for (size_t r = i; r < e; ++r) any_tree = any_tree || order[r].run != order[r].len;
            for (size_t r = i; r < e; ++r) {
                const row_window& w = order[r];
                g.rows.push_back(w.row), g.lens.push_back(w.len);
                if (!any_tree) continue;
                g.runs.push_back(w.run);
                if (g.tree_at.empty()) g.tree_at.push_back(0);
                g.tree.insert(g.tree.end(), offsets.begin() + offsets_at[size_t(w.row)],
                              offsets.begin() + offsets_at[size_t(w.row) + 1]);
                g.tree_at.push_back(int64_t(g.tree.size()));
            }
            groups.push_back(std::move(g));
        }
        i = e;
    }
    return groups;
}

void attention_grouped(thread_pool& pool, const tensor& q, const tensor& k_cache, const tensor& v_cache,
                       const std::vector<run_group>& groups, float scale, const tensor& out) {
    if (groups.empty()) return;
    heads H;
    H.d = q.ne[0], H.hq = q.ne[1], H.stride = k_cache.ne[0], H.hkv = H.stride / H.d, H.group = H.hq / H.hkv;
    H.scale = scale;
    const float* qp = q.host<const float>();
    float* op = out.host<float>();
    switch (k_cache.type) {
        case dtype::f32:
            return forward(pool, H, qp, k_cache.host<const float>(), v_cache.host<const float>(), op, groups);
        case dtype::f16:
            return forward(pool, H, qp, k_cache.host<const uint16_t>(), v_cache.host<const uint16_t>(), op, groups);
        default:
            throw error(TANDEM_ERR_UNSUPPORTED, "cpu attention: cache type " + std::string(dtype_name(k_cache.type)));
    }
}

bool attention_back_grouped(thread_pool& pool, const tensor& q, const tensor& k, const tensor& v, const tensor& meta,
                            const tensor& out, const tensor& d_out, float scale, const tensor& dq, const tensor& dk,
                            const tensor& dv) {
    heads H;
    H.d = q.ne[0], H.hq = q.ne[1], H.stride = k.ne[0], H.hkv = H.stride / H.d, H.group = H.hq / H.hkv;
    H.scale = scale;
    const int64_t m_rows = q.ne[2], n_slots = k.nrows();
    const int32_t* mt = meta.host<const int32_t>();
    const std::vector<run_group> groups = group_runs(mt, m_rows, 1, H.d);
    // Every row that sees a slot must be in a group, and the groups' slot ranges must be disjoint (each work item
    // owns its dk, dv rows); otherwise the caller takes the general path.
    int64_t seen = 0, grouped = 0;
    for (int64_t m = 0; m < m_rows; ++m) seen += mt[4 * m + 1] > 0 ? 1 : 0;
    for (const auto& g : groups) grouped += int64_t(g.rows.size());
    if (grouped != seen) return false;
    for (size_t i = 1; i < groups.size(); ++i)
        if (groups[i - 1].begin + groups[i - 1].len > groups[i].begin) return false;

    back_io io{q.host<const float>(),     k.host<const float>(), v.host<const float>(), out.host<const float>(),
               d_out.host<const float>(), dq.host<float>(),      dk.host<float>(),      dv.host<float>()};
    // Rows that see nothing get dq = 0; slots no group covers get dk = dv = 0.
    for (int64_t m = 0; m < m_rows; ++m)
        if (mt[4 * m + 1] <= 0) std::fill(io.dq + m * H.hq * H.d, io.dq + (m + 1) * H.hq * H.d, 0.f);
    int64_t next = 0;
    auto clear = [&](int64_t s0, int64_t s1) {
        std::fill(io.dk + s0 * H.stride, io.dk + s1 * H.stride, 0.f);
        std::fill(io.dv + s0 * H.stride, io.dv + s1 * H.stride, 0.f);
    };
    for (const auto& g : groups) clear(next, g.begin), next = g.begin + g.len;
    clear(next, n_slots);

    const int64_t items = int64_t(groups.size()) * H.hkv;
    pool.parallel_for(items, 1, [&](int64_t b, int64_t e) {
        thread_local std::vector<float> scratch;  // kept between calls: no allocation and zero fill per op
        for (int64_t i = b; i < e; ++i) backward_group(H, io, groups[size_t(i / H.hkv)], i % H.hkv, scratch);
    });
    return true;
}

}  // namespace tandem::cpu
