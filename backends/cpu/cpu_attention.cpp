// Fused attention for the cpu backend: one pass over the visible slots of each row with an online
// softmax (running max, running sum, rescaled accumulator), in blocks of slots so that the rescale and
// the exponentials are done once per block. Rows with at least min_chunk_slots visible slots (decode at long
// context) are threaded over pieces of their slots, each for every head, so that whole cache rows stream
// (run_chunked); shorter ones over (row, kv head, slice of the query heads that share it), so a K/V row is read
// once for all the query heads of a group in a slice. Groups of rows reading one
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

// One online-softmax step over a block of nb scores s (overwritten with their exponentials): the running max
// and sum are rescaled when the max grows, then acc[i] += sum_j p[j] * v[j][i].
template <typename CT>
void softmax_step(float* s, int64_t nb, const CT* const* v, int64_t d, float& run_max, float& run_sum, float* acc) {
    const float new_max = std::max(run_max, simd::max_of(s, nb));
    const float psum = exp_shifted(s, nb, new_max);
    if (new_max != run_max) {
        // exp(-inf) = 0 on the first block: the empty accumulator needs no rescale.
        const float c = std::exp(run_max - new_max);
        run_sum *= c;
        scale_inplace(acc, d, c);
        run_max = new_max;
    }
    run_sum += psum;
    accumulate_block(acc, s, v, nb, d);
}

// Query heads [h0, h1) of row m, all reading kv head kvh, over row m's visible slots.
template <typename CT>
void attend(const layout& L, const float* q, const CT* k_cache, const CT* v_cache, const visible_slots& vis, int64_t m,
            int64_t kvh, int64_t h0, int64_t h1, float* out, std::vector<float>& scratch) {
    const int64_t g = h1 - h0, d = L.d;
    scratch.resize(size_t(g * (block + d + 2)));
    float* scores = scratch.data();   // [g][block], written before it is read
    float* acc = scores + g * block;  // [g][d]
    float* run_max = acc + g * d;     // [g]
    float* run_sum = run_max + g;     // [g]
    std::fill(acc, run_sum + g, 0.f);
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
            softmax_step(scores + h * block, nb, vrows, d, run_max[h], run_sum[h], acc + h * d);
        }
    }
    for (int64_t h = 0; h < g; ++h) {
        float* o = out + (m * L.hq + h0 + h) * d;
        // No visible slot: the output is zero, as in cpu_ref.
        const float inv = run_sum[h] > 0.f ? 1.f / run_sum[h] : 0.f;
        for (int64_t i = 0; i < d; ++i) o[i] = acc[h * d + i] * inv;
    }
}

// Long rows (decode at long context) split by slots instead: a work item takes one row's visible slots
// [i0, i1) for every head, so it streams whole cache rows (all kv heads side by side) instead of one head's
// d-element piece of each row, a cache row apart. The per-head split left every line a separate miss: on the
// Intel Xeon host the 7B-shape decode cases (32 heads of 128) read 0.39-0.50 of the read bandwidth, ~65% of the
// time waiting in prefetch instructions for fill buffers; split by slots, 0.58-0.61 (f16) and 0.66-0.70 (f32),
// alternated twice with the per-head split in `tandem-bench ops -b cpu --filter attention_decode`. Each item leaves,
// per query head, its running max, sum and unnormalised accumulator; merge_chunks combines them exactly as the
// online softmax does between blocks.
constexpr int64_t chunk_block = 16;       // slots per online-softmax step (their K and V rows stay in L2)
constexpr int64_t min_chunk_slots = 256;  // a row is split only into chunks at least this long

template <typename CT>
void attend_chunk(const layout& L, const float* q, const CT* k_cache, const CT* v_cache, const visible_slots& vis,
                  int64_t m, int64_t i0, int64_t i1, float* part, std::vector<float>& scratch) {
    const int64_t d = L.d, hq = L.hq, part_stride = d + 2;
    scratch.resize(size_t(hq * chunk_block));
    float* scores = scratch.data();  // [hq][chunk_block], written before it is read
    for (int64_t h = 0; h < hq; ++h) {
        float* ph = part + h * part_stride;
        std::fill(ph, ph + d, 0.f);
        ph[d] = -std::numeric_limits<float>::infinity();  // running max
        ph[d + 1] = 0.f;                                  // running sum
    }
    const int64_t run_begin = vis.run_begin[size_t(m)], run_len = vis.run_len[size_t(m)];
    const int32_t* tree = vis.tree.data() + vis.tree_begin[size_t(m)];
    auto slot_of = [&](int64_t i) { return i < run_len ? run_begin + i : int64_t(tree[i - run_len]); };
    const int64_t row_lines = (L.row_stride * int64_t(sizeof(CT)) + 63) / 64;
    const int64_t head_lines = (d * int64_t(sizeof(CT)) + 63) / 64;
    const CT* krows[chunk_block];
    const CT* vrows[chunk_block];
    // The first block's rows, then each block prefetches the next one's, spread over its kv heads.
    for (int64_t i = i0; i < std::min(i1, i0 + chunk_block); ++i) {
        prefetch(k_cache + slot_of(i) * L.row_stride, row_lines);
        prefetch(v_cache + slot_of(i) * L.row_stride, row_lines);
    }
    for (int64_t b0 = i0; b0 < i1; b0 += chunk_block) {
        const int64_t nb = std::min(chunk_block, i1 - b0);
        const int64_t next = b0 + chunk_block, n_next = std::max<int64_t>(0, std::min(chunk_block, i1 - next));
        int64_t cur_slots[chunk_block], next_slots[chunk_block];
        for (int64_t j = 0; j < nb; ++j) cur_slots[j] = slot_of(b0 + j);
        for (int64_t j = 0; j < n_next; ++j) next_slots[j] = slot_of(next + j);
        for (int64_t kvh = 0; kvh < L.hkv; ++kvh) {
            // This kv head's share of the next block's lines: its own d-element pieces of each row.
            for (int64_t j = 0; j < n_next; ++j) {
                prefetch(k_cache + next_slots[j] * L.row_stride + kvh * d, head_lines);
                prefetch(v_cache + next_slots[j] * L.row_stride + kvh * d, head_lines);
            }
            for (int64_t j = 0; j < nb; ++j) {
                krows[j] = k_cache + cur_slots[j] * L.row_stride + kvh * d;
                vrows[j] = v_cache + cur_slots[j] * L.row_stride + kvh * d;
            }
            for (int64_t h = kvh * L.group; h < (kvh + 1) * L.group; ++h) {
                float* s = scores + h * chunk_block;
                float* ph = part + h * part_stride;
                scores_block(q + (m * hq + h) * d, krows, nb, d, L.scale, s);
                softmax_step(s, nb, vrows, d, ph[d], ph[d + 1], ph);
            }
        }
    }
}

// out for row m, head h from its chunks' partial results (max, sum, accumulator each).
void merge_chunks(const layout& L, const float* parts, int64_t n_chunks, int64_t m, int64_t h, float* out) {
    const int64_t d = L.d, part_stride = d + 2, chunk_stride = L.hq * part_stride;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < n_chunks; ++c) top = std::max(top, parts[c * chunk_stride + h * part_stride + d]);
    float* o = out + (m * L.hq + h) * d;
    std::fill(o, o + d, 0.f);
    float sum = 0.f;
    for (int64_t c = 0; c < n_chunks; ++c) {
        const float* ph = parts + c * chunk_stride + h * part_stride;
        if (ph[d + 1] == 0.f) continue;  // an empty chunk (its max is -inf)
        const float w = std::exp(ph[d] - top);
        sum += ph[d + 1] * w;
        for (int64_t i = 0; i < d; ++i) o[i] += ph[i] * w;
    }
    // No visible slot: the output is zero, as in cpu_ref.
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int64_t i = 0; i < d; ++i) o[i] *= inv;
}

// The rows of `rows` with at least min_chunk_slots visible slots, split into pieces of at least that many slots
// (as many as the threads need when the rows are fewer); returns the rows left for the per-head split.
template <typename CT>
std::vector<int64_t> run_chunked(thread_pool& pool, const layout& L, const float* q, const CT* kc, const CT* vc,
                                 const visible_slots& vis, const std::vector<int64_t>& rows, float* out) {
    struct piece {
        int64_t m, i0, i1;
    };
    std::vector<piece> pieces;
    std::vector<int64_t> rest;
    std::vector<std::pair<int64_t, int64_t>> row_pieces;  // (first piece, count) per chunked row
    std::vector<int64_t> chunked_rows;
    // Pieces per row: enough for every thread when the rows are fewer than the threads, else whole rows.
    const int64_t n_rows = int64_t(rows.size()), threads = pool.size();
    const int64_t want = n_rows == 0 ? 1 : std::max<int64_t>(1, (threads + n_rows - 1) / n_rows);
    for (int64_t m : rows) {
        const int64_t n_vis = vis.run_len[size_t(m)] + vis.tree_begin[size_t(m) + 1] - vis.tree_begin[size_t(m)];
        const int64_t n = std::min(want, n_vis / min_chunk_slots);
        if (n < 1) {
            rest.push_back(m);
            continue;
        }
        row_pieces.emplace_back(int64_t(pieces.size()), n);
        chunked_rows.push_back(m);
        for (int64_t c = 0; c < n; ++c) pieces.push_back({m, n_vis * c / n, n_vis * (c + 1) / n});
    }
    if (pieces.empty()) return rest;
    const int64_t part_floats = L.hq * (L.d + 2);
    std::vector<float> parts(size_t(int64_t(pieces.size()) * part_floats));
    pool.parallel_for(int64_t(pieces.size()), 1, [&](int64_t p0, int64_t p1) {
        thread_local std::vector<float> scratch;  // kept between calls: no allocation per op
        for (int64_t p = p0; p < p1; ++p) {
            const piece& pc = pieces[size_t(p)];
            attend_chunk(L, q, kc, vc, vis, pc.m, pc.i0, pc.i1, parts.data() + p * part_floats, scratch);
        }
    });
    for (size_t r = 0; r < chunked_rows.size(); ++r) {
        const auto [first, n] = row_pieces[r];
        for (int64_t h = 0; h < L.hq; ++h)
            merge_chunks(L, parts.data() + first * part_floats, n, chunked_rows[r], h, out);
    }
    return rest;
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
        thread_local std::vector<float> scratch;  // kept between calls: no allocation per op
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
        case dtype::f32: {
            const float *kc = k_cache.host<const float>(), *vc = v_cache.host<const float>();
            return run(pool, L, qp, kc, vc, vis, run_chunked(pool, L, qp, kc, vc, vis, rest, op), op);
        }
        case dtype::f16: {
            const uint16_t *kc = k_cache.host<const uint16_t>(), *vc = v_cache.host<const uint16_t>();
            return run(pool, L, qp, kc, vc, vis, run_chunked(pool, L, qp, kc, vc, vis, rest, op), op);
        }
        default:
            throw error(TANDEM_ERR_UNSUPPORTED, "cpu attention: cache type " + std::string(dtype_name(k_cache.type)));
    }
}

}  // namespace tandem::cpu
