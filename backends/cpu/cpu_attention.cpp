// Fused attention for the cpu backend: one pass over the visible slots of each row with an online
// softmax (running max, running sum, rescaled accumulator), in blocks of slots so that the rescale and
// the exponentials are done once per block. Threaded over (row, kv head, slice of the query heads that
// share it), so a K/V row is read once for all the query heads of a group in a slice. Groups of rows reading one
// key run from its start (prefill, training, token trees of 4 rows and more) go to the tiled kernels of
// cpu_attention_block.cpp instead, and so do all rows that can when the head size is not a multiple of the vector
// width: the per-row kernels are scalar there.
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/cpu_simd.h"
#include "engine/error.h"

namespace tandem::cpu {

namespace {

constexpr int64_t block = 64;  // slots per online-softmax step
// Rows sharing one key run from which the tiled kernels (cpu_attention_block.cpp) pay for their key transpose.
constexpr int64_t min_group_rows = 4;

struct layout {
    int64_t d, hq, m_rows, hkv, group, n_slots, row_stride;  // row_stride: elements per cache row
    int64_t n_walk;  // walk table entries (meta rows): the m_rows query rows, then walk-only entries
    float scale;
};

// For every row, the slots it attends to: the contiguous run, then the slots of its tree walk. Validated
// up front so that no worker thread throws.
struct visible_slots {
    std::vector<int64_t> run_begin, run_len;  // per row
    std::vector<int32_t> tree;                // all rows' tree slots
    std::vector<int64_t> tree_begin;          // row m's are tree[tree_begin[m], tree_begin[m + 1])
    int64_t total = 0;                        // visible slots over all rows
};

visible_slots collect(const layout& L, const int32_t* mt, const int32_t* sl) {
    visible_slots v;
    v.run_begin.assign(size_t(L.m_rows), 0);
    v.run_len.assign(size_t(L.m_rows), 0);
    v.tree_begin.reserve(size_t(L.m_rows) + 1);
    for (int64_t m = 0; m < L.m_rows; ++m) {
        v.tree_begin.push_back(int64_t(v.tree.size()));
        const int64_t kv_begin = mt[m * 4 + 0], kv_len = mt[m * 4 + 1];
        if (kv_len > 0) {
            if (kv_begin < 0 || kv_begin + kv_len > L.n_slots) {
                throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention: row " + std::to_string(m) + " run [" +
                                                             std::to_string(kv_begin) + ", " +
                                                             std::to_string(kv_begin + kv_len) + ") outside " +
                                                             std::to_string(L.n_slots) + " slots");
            }
            v.run_begin[size_t(m)] = kv_begin, v.run_len[size_t(m)] = kv_len;
            v.total += kv_len;
        }
        int64_t steps = 0;
        for (int32_t j = mt[m * 4 + 2]; j >= 0; j = mt[int64_t(j) * 4 + 3]) {
            // A walk longer than the walk table has a cycle: the bound keeps a bad parent array from hanging us.
            if (j >= L.n_walk || ++steps > L.n_walk) throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention: bad tree");
            if (sl[j] < 0 || sl[j] >= L.n_slots)
                throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention: slot out of range");
            v.tree.push_back(sl[j]);
        }
    }
    v.tree_begin.push_back(int64_t(v.tree.size()));
    v.total += int64_t(v.tree.size());
    return v;
}

constexpr int64_t prefetch_distance = 8;  // slots ahead

// Cache rows are a whole row (all kv heads) apart, too far for the hardware prefetcher.
template <typename CT>
inline void prefetch(const CT* p, int64_t lines) {
    const char* c = reinterpret_cast<const char*>(p);
    for (int64_t l = 0; l < lines; ++l) __builtin_prefetch(c + 64 * l);
}

// x[i] = exp(x[i] - shift); returns the sum.
inline float exp_shifted(float* x, int64_t n, float shift) {
    using namespace simd;
    vf sum = zero();
    int64_t i = 0;
    for (; i + width <= n; i += width) {
        const vf e = simd::exp(add(load(x + i), set1(-shift)));
        store(x + i, e);
        sum = add(sum, e);
    }
    float s = reduce_add(sum);
    for (; i < n; ++i) s += (x[i] = std::exp(x[i] - shift));
    return s;
}

// s[j] = scale * dot(q, k[j]) for nb rows; `width` rows at a time share each q load and one transposing
// reduction instead of a horizontal sum per row.
template <typename CT>
void scores_block(const float* q, const CT* const* k, int64_t nb, int64_t d, float scale, float* s) {
    using namespace simd;
    int64_t j = 0;
    for (; j + width <= nb; j += width) {
        vf acc[width];
        for (auto& a : acc) a = zero();
        int64_t i = 0;
        for (; i + width <= d; i += width) {
            const vf qv = load(q + i);
            for (int t = 0; t < width; ++t) acc[t] = fma(qv, load(k[j + t] + i), acc[t]);
        }
        vf sums = sum_each(acc);
        if (i < d) {  // head size not a multiple of the vector width
            alignas(64) float tail[width];
            for (int t = 0; t < width; ++t) {
                tail[t] = 0.f;
                for (int64_t r = i; r < d; ++r) tail[t] += q[r] * to_f32(k[j + t][r]);
            }
            sums = add(sums, load(tail));
        }
        store(s + j, mul(sums, set1(scale)));
    }
    for (; j < nb; ++j) s[j] = simd::dot(q, k[j], d) * scale;
}

// acc[i] += sum_j p[j] * v[j][i], with accumulators held in registers across the block's rows.
template <typename CT>
void accumulate_block(float* acc, const float* p, const CT* const* v, int64_t nb, int64_t d) {
    using namespace simd;
    int64_t i = 0;
    for (; i + 4 * width <= d; i += 4 * width) {
        vf a0 = load(acc + i), a1 = load(acc + i + width), a2 = load(acc + i + 2 * width),
           a3 = load(acc + i + 3 * width);
        for (int64_t j = 0; j < nb; ++j) {
            const vf pv = set1(p[j]);
            const CT* vr = v[j] + i;
            a0 = fma(pv, load(vr), a0);
            a1 = fma(pv, load(vr + width), a1);
            a2 = fma(pv, load(vr + 2 * width), a2);
            a3 = fma(pv, load(vr + 3 * width), a3);
        }
        store(acc + i, a0), store(acc + i + width, a1), store(acc + i + 2 * width, a2), store(acc + i + 3 * width, a3);
    }
    for (; i + width <= d; i += width) {
        vf a0 = load(acc + i);
        for (int64_t j = 0; j < nb; ++j) a0 = fma(set1(p[j]), load(v[j] + i), a0);
        store(acc + i, a0);
    }
    for (; i < d; ++i) {
        float a = acc[i];
        for (int64_t j = 0; j < nb; ++j) a += p[j] * to_f32(v[j][i]);
        acc[i] = a;
    }
}

// acc[i] *= c (c != 1 only after the running max grew).
inline void scale_inplace(float* acc, int64_t d, float c) {
    using namespace simd;
    int64_t i = 0;
    for (; i + width <= d; i += width) store(acc + i, mul(load(acc + i), set1(c)));
    for (; i < d; ++i) acc[i] *= c;
}

// Query heads [h0, h1) of row m, all reading kv head kvh, over row m's visible slots.
template <typename CT>
void attend(const layout& L, const float* q, const CT* k_cache, const CT* v_cache, const visible_slots& vis, int64_t m,
            int64_t kvh, int64_t h0, int64_t h1, float* out, std::vector<float>& scratch) {
    const int64_t g = h1 - h0, d = L.d;
    scratch.assign(size_t(g * (block + d + 2)), 0.f);
    float* scores = scratch.data();   // [g][block]
    float* acc = scores + g * block;  // [g][d]
    float* run_max = acc + g * d;     // [g]
    float* run_sum = run_max + g;     // [g]
    std::fill(run_max, run_max + g, -std::numeric_limits<float>::infinity());
    const float* qrow = q + (m * L.hq + h0) * d;
    const int64_t run_begin = vis.run_begin[size_t(m)], run_len = vis.run_len[size_t(m)];
    const int32_t* tree = vis.tree.data() + vis.tree_begin[size_t(m)];
    const int64_t n_vis = run_len + vis.tree_begin[size_t(m) + 1] - vis.tree_begin[size_t(m)];
    const int64_t lines = (d * int64_t(sizeof(CT)) + 63) / 64;
    const CT* krows[block];
    const CT* vrows[block];
    for (int64_t b0 = 0; b0 < n_vis; b0 += block) {
        const int64_t nb = std::min(block, n_vis - b0);
        for (int64_t j = 0; j < nb; ++j) {
            const int64_t slot = b0 + j < run_len ? run_begin + b0 + j : tree[b0 + j - run_len];
            krows[j] = k_cache + slot * L.row_stride + kvh * d;
            vrows[j] = v_cache + slot * L.row_stride + kvh * d;
        }
        // K rows a few slots ahead of the dot products, V rows for the accumulation after the softmax step.
        for (int64_t j = 0; j < nb; ++j) prefetch(vrows[j], lines);
        for (int64_t j = 0; j < std::min(nb, prefetch_distance); ++j) prefetch(krows[j], lines);
        for (int64_t j0 = 0; j0 < nb; j0 += prefetch_distance) {
            const int64_t j1 = std::min(nb, j0 + prefetch_distance);
            for (int64_t j = j1; j < std::min(nb, j1 + prefetch_distance); ++j) prefetch(krows[j], lines);
            for (int64_t h = 0; h < g; ++h)
                scores_block(qrow + h * d, krows + j0, j1 - j0, d, L.scale, scores + h * block + j0);
        }
        for (int64_t h = 0; h < g; ++h) {
            float* s = scores + h * block;
            const float new_max = std::max(run_max[h], simd::max_of(s, nb));
            const float psum = exp_shifted(s, nb, new_max);
            if (new_max != run_max[h]) {
                // exp(-inf) = 0 on the first block: the empty accumulator needs no rescale.
                const float c = std::exp(run_max[h] - new_max);
                run_sum[h] *= c;
                scale_inplace(acc + h * d, d, c);
                run_max[h] = new_max;
            }
            run_sum[h] += psum;
            accumulate_block(acc + h * d, s, vrows, nb, d);
        }
    }
    for (int64_t h = 0; h < g; ++h) {
        float* o = out + (m * L.hq + h0 + h) * d;
        // No visible slot: the output is zero, as in cpu_ref.
        const float inv = run_sum[h] > 0.f ? 1.f / run_sum[h] : 0.f;
        for (int64_t i = 0; i < d; ++i) o[i] = acc[h * d + i] * inv;
    }
}

template <typename CT>
void run(thread_pool& pool, const layout& L, const float* q, const CT* kc, const CT* vc, const visible_slots& vis,
         const std::vector<int64_t>& rows, float* out) {
    // Split each group of query heads into slices when rows x kv heads alone would leave threads idle.
    const int64_t n_rows = int64_t(rows.size());
    if (n_rows == 0) return;
    const int64_t units = n_rows * L.hkv;
    const int64_t want = int64_t(pool.size()) * 4;
    const int64_t n_split = std::clamp<int64_t>((want + units - 1) / units, 1, L.group);
    const int64_t per_split = (L.group + n_split - 1) / n_split;
    const int64_t items = units * n_split;
    const int64_t avg_vis = vis.total / std::max<int64_t>(1, L.m_rows) + 1;
    pool.parallel_for(items, grain(avg_vis * per_split * L.d * 2), [&](int64_t i0, int64_t i1) {
        std::vector<float> scratch;
        for (int64_t it = i0; it < i1; ++it) {
            // kv-head-major order: consecutive items reuse one head's K/V columns while they are in cache.
            const int64_t split = it % n_split, m = rows[size_t((it / n_split) % n_rows)];
            const int64_t kvh = it / (n_split * n_rows);
            const int64_t h0 = kvh * L.group + split * per_split;
            const int64_t h1 = std::min(h0 + per_split, (kvh + 1) * L.group);
            if (h0 >= h1) continue;
            attend(L, q, kc, vc, vis, m, kvh, h0, h1, out, scratch);
        }
    });
}

}  // namespace

void attention(thread_pool& pool, const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
               const tensor& slots, const attention_params& p, const tensor& out) {
    layout L;
    L.d = q.ne[0], L.hq = q.ne[1], L.m_rows = q.ne[2];
    L.hkv = k_cache.ne[0] / L.d, L.group = L.hq / L.hkv, L.n_slots = k_cache.nrows(), L.row_stride = k_cache.ne[0];
    L.n_walk = meta.nrows();
    L.scale = p.scale;
    const int32_t* mt = meta.host<const int32_t>();
    const visible_slots vis = collect(L, mt, slots.host<const int32_t>());
    if (k_cache.type != dtype::f32 && k_cache.type != dtype::f16)
        throw error(TANDEM_ERR_UNSUPPORTED, "cpu attention: cache type " + std::string(dtype_name(k_cache.type)));
    // Groups of at least min_group_rows rows reading one key run from its start, with or without a tree walk
    // (prefill, training, token trees), take the tiled kernels; decode rows and small groups keep the per-row path,
    // which splits a row's heads over threads. Tree rows joined the tiles later: the 1.1B shape's 9-row tree pass
    // (64 heads of 64) took 32.0-33.3 ms with them on the per-row path and 30.5-30.8 tiled, alternated in one
    // process. Narrow heads (8 floats in a 16-float vector) take the tiled kernels for every row they can: its key
    // transpose costs about what one scalar pass over the keys does, and it is shared by all the rows and heads of
    // the group.
    const bool narrow = L.d % simd::width != 0;
    const std::vector<run_group> groups =
        group_windows(mt, L.m_rows, vis.tree.data(), vis.tree_begin.data(), narrow ? 1 : min_group_rows, L.d);
    std::vector<char> grouped(size_t(L.m_rows), 0);
    for (const auto& g : groups)
        for (int64_t m : g.rows) grouped[size_t(m)] = 1;
    std::vector<int64_t> rest;
    for (int64_t m = 0; m < L.m_rows; ++m)
        if (!grouped[size_t(m)]) rest.push_back(m);
    attention_grouped(pool, q, k_cache, v_cache, groups, p.scale, out);
    const float* qp = q.host<const float>();
    float* op = out.host<float>();
    switch (k_cache.type) {
        case dtype::f32:
            return run(pool, L, qp, k_cache.host<const float>(), v_cache.host<const float>(), vis, rest, op);
        case dtype::f16:
            return run(pool, L, qp, k_cache.host<const uint16_t>(), v_cache.host<const uint16_t>(), vis, rest, op);
        default:
            throw error(TANDEM_ERR_UNSUPPORTED, "cpu attention: cache type " + std::string(dtype_name(k_cache.type)));
    }
}

}  // namespace tandem::cpu
