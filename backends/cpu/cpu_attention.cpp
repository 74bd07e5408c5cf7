// Fused attention for the cpu backend: one pass over the visible slots of each row with an online
// softmax (running max, running sum, rescaled accumulator), in blocks of slots so that the rescale and
// the exponentials are done once per block. Threaded over (row, kv head, slice of the query heads that
// share it), so a K/V row is read once for all the query heads of a group in a slice.
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/cpu_simd.h"
#include "engine/error.h"

namespace tandem::cpu {

namespace {

constexpr int64_t block = 64;  // slots per online-softmax step

struct layout {
    int64_t d, hq, m_rows, hkv, group, n_slots, row_stride;  // row_stride: elements per cache row
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
            // A walk longer than the batch has a cycle: the bound keeps a bad parent array from hanging us.
            if (j >= L.m_rows || ++steps > L.m_rows) throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention: bad tree");
            if (sl[j] < 0 || sl[j] >= L.n_slots) throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention: slot out of range");
            v.tree.push_back(sl[j]);
        }
    }
    v.tree_begin.push_back(int64_t(v.tree.size()));
    v.total += int64_t(v.tree.size());
    return v;
}

constexpr int64_t prefetch_distance = 8;  // slots

template <typename CT>
inline void prefetch(const CT* p, int64_t n) {
#if defined(__GNUC__)
    const char* c = reinterpret_cast<const char*>(p);
    for (int64_t off = 0; off < n * int64_t(sizeof(CT)); off += 64) __builtin_prefetch(c + off);
#else
    (void)p, (void)n;
#endif
}

// acc[i] = acc[i] * c (c != 1 only after the running max grew).
inline void scale_inplace(float* acc, int64_t d, float c) {
    using namespace simd;
    int64_t i = 0;
    for (; i + width <= d; i += width) store(acc + i, mul(load(acc + i), set1(c)));
    for (; i < d; ++i) acc[i] *= c;
}

// acc[i] += p * v[i]
template <typename CT>
inline void axpy(float* acc, const CT* v, int64_t d, float p) {
    using namespace simd;
    const vf pv = set1(p);
    int64_t i = 0;
    for (; i + width <= d; i += width) store(acc + i, fma(pv, load(v + i), load(acc + i)));
    for (; i < d; ++i) acc[i] += p * to_f32(v[i]);
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

// Query heads [h0, h1) of row m, all reading kv head kvh, over row m's visible slots.
template <typename CT>
void attend(const layout& L, const float* q, const CT* k_cache, const CT* v_cache, const visible_slots& vis, int64_t m,
            int64_t kvh, int64_t h0, int64_t h1, float* out, std::vector<float>& scratch) {
    const int64_t g = h1 - h0, d = L.d;
    scratch.assign(size_t(g * (block + d + 2)), 0.f);
    float* scores = scratch.data();            // [g][block]
    float* acc = scores + g * block;           // [g][d]
    float* run_max = acc + g * d;              // [g]
    float* run_sum = run_max + g;              // [g]
    std::fill(run_max, run_max + g, -std::numeric_limits<float>::infinity());
    const float* qrow = q + (m * L.hq + h0) * d;
    const int64_t run_begin = vis.run_begin[size_t(m)], run_len = vis.run_len[size_t(m)];
    const int32_t* tree = vis.tree.data() + vis.tree_begin[size_t(m)];
    const int64_t n_vis = run_len + vis.tree_begin[size_t(m) + 1] - vis.tree_begin[size_t(m)];
    int64_t ids[block];
    for (int64_t b0 = 0; b0 < n_vis; b0 += block) {
        const int64_t nb = std::min(block, n_vis - b0);
        for (int64_t j = 0; j < nb; ++j) ids[j] = b0 + j < run_len ? run_begin + b0 + j : tree[b0 + j - run_len];
        for (int64_t j = 0; j < std::min<int64_t>(nb, prefetch_distance); ++j)
            prefetch(k_cache + ids[j] * L.row_stride + kvh * d, d);
        for (int64_t j = 0; j < nb; ++j) {
            // Cache rows are a whole row apart (all kv heads), too far for the hardware prefetcher: fetch the
            // K row a few slots ahead, and this slot's V row for the accumulation after the block.
            if (j + prefetch_distance < nb) prefetch(k_cache + ids[j + prefetch_distance] * L.row_stride + kvh * d, d);
            prefetch(v_cache + ids[j] * L.row_stride + kvh * d, d);
            const CT* kr = k_cache + ids[j] * L.row_stride + kvh * d;
            for (int64_t h = 0; h < g; ++h) scores[h * block + j] = simd::dot(qrow + h * d, kr, d) * L.scale;
        }
        for (int64_t h = 0; h < g; ++h) {
            float* s = scores + h * block;
            float bmax = s[0];
            for (int64_t j = 1; j < nb; ++j) bmax = std::max(bmax, s[j]);
            const float new_max = std::max(run_max[h], bmax);
            const float psum = exp_shifted(s, nb, new_max);
            if (new_max != run_max[h]) {
                // exp(-inf) = 0 on the first block: the empty accumulator needs no rescale.
                const float c = std::exp(run_max[h] - new_max);
                run_sum[h] *= c;
                scale_inplace(acc + h * d, d, c);
                run_max[h] = new_max;
            }
            run_sum[h] += psum;
        }
        for (int64_t j = 0; j < nb; ++j) {
            const CT* vr = v_cache + ids[j] * L.row_stride + kvh * d;
            for (int64_t h = 0; h < g; ++h) axpy(acc + h * d, vr, d, scores[h * block + j]);
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
         float* out) {
    // Split each group of query heads into slices when rows x kv heads alone would leave threads idle.
    const int64_t units = L.m_rows * L.hkv;
    const int64_t want = int64_t(pool.size()) * 4;
    const int64_t n_split = std::clamp<int64_t>((want + units - 1) / units, 1, L.group);
    const int64_t per_split = (L.group + n_split - 1) / n_split;
    const int64_t items = units * n_split;
    const int64_t avg_vis = vis.total / std::max<int64_t>(1, L.m_rows) + 1;
    pool.parallel_for(items, grain(avg_vis * per_split * L.d * 2), [&](int64_t i0, int64_t i1) {
        std::vector<float> scratch;
        for (int64_t it = i0; it < i1; ++it) {
            // kv-head-major order: consecutive items reuse one head's K/V columns while they are in cache.
            const int64_t split = it % n_split, m = (it / n_split) % L.m_rows, kvh = it / (n_split * L.m_rows);
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
    L.scale = p.scale;
    const visible_slots vis = collect(L, meta.host<const int32_t>(), slots.host<const int32_t>());
    const float* qp = q.host<const float>();
    float* op = out.host<float>();
    switch (k_cache.type) {
        case dtype::f32: return run(pool, L, qp, k_cache.host<const float>(), v_cache.host<const float>(), vis, op);
        case dtype::f16:
            return run(pool, L, qp, k_cache.host<const uint16_t>(), v_cache.host<const uint16_t>(), vis, op);
        default:
            throw error(TANDEM_ERR_UNSUPPORTED, "cpu attention: cache type " + std::string(dtype_name(k_cache.type)));
    }
}

}  // namespace tandem::cpu
