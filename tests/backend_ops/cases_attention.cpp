// attention cases: causal prefill chains, decode rows, token trees (random parent arrays, also split over
// two passes with walk-only entries), and ragged batches of several sessions in one call, over head sizes
// 8/64/128, GQA ratios 1/2/4, f32 and f16 caches and contexts up to 2000 slots.
#include <cmath>

#include "tests/backend_ops/cases.h"

namespace tandem::test {

// One meta row. (Four push_backs rather than an insert of a list: GCC 12 misreports that as an overflow.)
void attention_rows::push_meta(int64_t kv_begin, int64_t kv_len, int64_t tree, int64_t parent) {
    for (int64_t v : {kv_begin, kv_len, tree, parent}) meta.push_back(int32_t(v));
}

void attention_rows::add_chain(int64_t base, int64_t committed, int64_t n_new) {
    for (int64_t i = 0; i < n_new; ++i) {
        push_meta(base, committed + i + 1, -1, -1);
        slots.push_back(int32_t(base + committed + i));
    }
}

namespace {

// parent[j] < j for a random tree of n nodes of depth <= max_depth (-1 marks a root).
std::vector<int64_t> random_parents(rng& r, int64_t n, int64_t max_depth, bool many_roots) {
    std::vector<int64_t> parent, depth;
    for (int64_t j = 0; j < n; ++j) {
        int64_t p = -1;
        if (j > 0 && (!many_roots || r.integer(0, 7) != 0)) {
            std::vector<int64_t> open;  // nodes that may take a child without exceeding max_depth
            for (int64_t i = 0; i < j; ++i)
                if (depth[size_t(i)] < max_depth) open.push_back(i);
            if (!open.empty()) p = open[size_t(r.integer(0, int64_t(open.size()) - 1))];
        }
        parent.push_back(p);
        depth.push_back(p < 0 ? 1 : depth[size_t(p)] + 1);
    }
    return parent;
}

}  // namespace

void attention_rows::add_tree(rng& r, int64_t base, int64_t committed, int64_t n_nodes, int64_t max_depth,
                              bool many_roots) {
    const int64_t row0 = size();
    const auto parent = random_parents(r, n_nodes, max_depth, many_roots);
    for (int64_t j = 0; j < n_nodes; ++j) {
        push_meta(base, committed, row0 + j, parent[size_t(j)] < 0 ? -1 : row0 + parent[size_t(j)]);
        slots.push_back(int32_t(base + committed + j));
    }
}

void attention_rows::add_tree_second_pass(rng& r, int64_t base, int64_t committed, int64_t n_old, int64_t n_new,
                                          int64_t max_depth) {
    const int64_t row0 = size(), walk0 = int64_t(walk_slots.size());
    const auto parent = random_parents(r, n_old + n_new, max_depth, false);
    auto ref = [&](int64_t node) {  // where a node lives: a walk-only entry or a query row
        return node < 0 ? -1 : node < n_old ? walk_ref(walk0 + node) : row0 + node - n_old;
    };
    for (int64_t j = 0; j < n_old + n_new; ++j) {
        const int32_t slot = int32_t(base + committed + j);
        if (j < n_old) {
            for (int64_t v : {int64_t(-77), int64_t(1) << 30, int64_t(-1), ref(parent[size_t(j)])})
                walk_meta.push_back(int32_t(v));
            walk_slots.push_back(slot);
        } else {
            push_meta(base, committed, ref(j), ref(parent[size_t(j)]));
            slots.push_back(slot);
        }
    }
}

std::vector<int32_t> attention_rows::table_meta() const {
    const int64_t m = size();
    std::vector<int32_t> t = meta;
    t.insert(t.end(), walk_meta.begin(), walk_meta.end());
    for (size_t i = 0; i < t.size(); i += 4)
        for (size_t f : {size_t(2), size_t(3)})
            if (t[i + f] <= -2) t[i + f] = int32_t(m + (-2 - int64_t(t[i + f])));
    return t;
}

std::vector<int32_t> attention_rows::table_slots() const {
    std::vector<int32_t> t = slots;
    t.insert(t.end(), walk_slots.begin(), walk_slots.end());
    return t;
}

op_case attention_case(rng& r, const std::string& variant, const attention_shape& s, const attention_rows& rows) {
    const int64_t m = rows.size(), t = m + int64_t(rows.walk_slots.size());
    op_case c;
    c.desc = variant + " D=" + std::to_string(s.d) + " Hq=" + std::to_string(s.hq) + " Hkv=" + std::to_string(s.hkv) +
             " S=" + std::to_string(s.n_slots) + " M=" + std::to_string(m) + " T=" + std::to_string(t) +
             " qscale=" + std::to_string(s.q_scale);
    c.args = {random_arg(r, dtype::f32, {s.d, s.hq, m, 1}, -s.q_scale, s.q_scale),
              random_arg(r, s.cache, {s.d * s.hkv, s.n_slots, 1, 1}),
              random_arg(r, s.cache, {s.d * s.hkv, s.n_slots, 1, 1}),
              i32_arg({4, t, 1, 1}, rows.table_meta()),
              i32_arg({t, 1, 1, 1}, rows.table_slots()),
              output_arg(dtype::f32, {s.d, s.hq, m, 1})};
    c.outputs = {5};
    // Outputs are convex combinations of values in [-1, 1]. Reordered dot products move scores (up to ~50
    // with q_scale 16) by ~1e-6 relative, which exp turns into weight errors of ~5e-5 at most; a missing or
    // extra slot among 2000 moves a row by ~2.5e-4 against outputs of ~1e-2, an NMSE of ~1e-4.
    c.tol = {1e-9, 5e-5};
    const float scale = 1.f / std::sqrt(float(s.d));
    c.run = [scale](backend& b, const std::vector<tensor>& a) {
        attention_params p;
        p.scale = scale;
        b.attention(a[0], a[1], a[2], a[3], a[4], p, a[5]);
    };
    return c;
}

namespace {

struct head_config {
    int64_t d, hq, hkv;
};
// Head sizes 8 / 64 / 128 against GQA ratios 1, 2 and 4.
const head_config heads[] = {{8, 2, 2}, {64, 4, 2}, {128, 4, 1}, {64, 8, 8}, {8, 8, 2}};

std::string variant(const char* kind, dtype cache) {
    return "attention_" + std::string(kind) + "_" + std::string(dtype_name(cache));
}

void prefill(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int64_t committed : {0, 17, 300}) {
            for (int64_t n_new : {1, 7, 64}) {
                attention_rows rows;
                rows.add_chain(0, committed, n_new);
                attention_shape s{h.d, h.hq, h.hkv, committed + n_new + 3, cache, 1.f};
                t.check(attention_case(t.random(), variant("prefill", cache), s, rows));
            }
        }
    }
    // A long prefill into a 2000-slot context, and a sharp softmax (large scores) that moves the running max.
    attention_rows rows;
    rows.add_chain(0, 1936, 64);
    t.check(attention_case(t.random(), variant("prefill", cache), {64, 4, 2, 2000, cache, 1.f}, rows));
    attention_rows sharp;
    sharp.add_chain(0, 150, 16);
    t.check(attention_case(t.random(), variant("prefill", cache), {64, 4, 4, 200, cache, 12.f}, sharp));
}

void decode(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int64_t ctx : {1, 2, 63, 64, 65, 129, 1000, 2000}) {
            attention_rows rows;
            rows.add_chain(0, ctx - 1, 1);
            t.check(attention_case(t.random(), variant("decode", cache), {h.d, h.hq, h.hkv, 2000, cache, 1.f}, rows));
        }
    }
    attention_rows sharp;
    sharp.add_chain(0, 1499, 1);
    t.check(attention_case(t.random(), variant("decode", cache), {128, 8, 2, 1500, cache, 16.f}, sharp));
}

void tree(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int64_t committed : {0, 5, 200}) {
            for (int64_t nodes : {1, 8, 33, 64}) {
                attention_rows rows;
                rows.add_tree(t.random(), 0, committed, nodes, 8, nodes % 2 == 1);
                attention_shape s{h.d, h.hq, h.hkv, committed + nodes + 1, cache, 1.f};
                t.check(attention_case(t.random(), variant("tree", cache), s, rows));
            }
        }
    }
    // Trees verified in two passes: the earlier nodes are walk-only entries after the query rows.
    for (const auto& h : heads) {
        for (auto [n_old, n_new] : {std::pair<int64_t, int64_t>{1, 1}, {5, 3}, {20, 44}}) {
            attention_rows rows;
            rows.add_tree_second_pass(t.random(), 0, 30, n_old, n_new, 8);
            attention_shape s{h.d, h.hq, h.hkv, 30 + n_old + n_new, cache, 1.f};
            t.check(attention_case(t.random(), variant("tree", cache), s, rows));
        }
    }
    // A chain-shaped tree as deep as the batch (depth limit = node count).
    attention_rows deep;
    deep.add_tree(t.random(), 0, 40, 64, 64, false);
    t.check(attention_case(t.random(), variant("tree", cache), {64, 4, 2, 200, cache, 4.f}, deep));
}

// Several sessions at different places in one cache, each a decode row, a chain or a tree.
void ragged(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int rep = 0; rep < 3; ++rep) {
            attention_rows rows;
            const int64_t n_sessions = t.random().integer(2, 5);
            int64_t base = 0;
            for (int64_t sidx = 0; sidx < n_sessions; ++sidx) {
                const int64_t committed = t.random().integer(0, 400);
                const int64_t kind = t.random().integer(0, 3);
                const int64_t n_new = kind == 0 ? 1 : t.random().integer(1, 20);
                if (kind == 3) {
                    const int64_t n_old = t.random().integer(1, 10);
                    rows.add_tree_second_pass(t.random(), base, committed, n_old, n_new, 8);
                    base += n_old;
                } else if (kind == 2) {
                    rows.add_tree(t.random(), base, committed, n_new, 8, true);
                } else {
                    rows.add_chain(base, committed, n_new);
                }
                base += committed + n_new + t.random().integer(0, 30);
            }
            // A row that sees nothing (an empty session): its output is zero.
            rows.push_meta(base, 0, -1, -1);
            rows.slots.push_back(0);
            t.check(
                attention_case(t.random(), variant("ragged", cache), {h.d, h.hq, h.hkv, base + 1, cache, 2.f}, rows));
        }
    }
}

}  // namespace

TEST_P(backend_ops, attention_prefill_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    prefill(*this, dtype::f32);
}
TEST_P(backend_ops, attention_prefill_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    prefill(*this, dtype::f16);
}
TEST_P(backend_ops, attention_decode_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    decode(*this, dtype::f32);
}
TEST_P(backend_ops, attention_decode_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    decode(*this, dtype::f16);
}
TEST_P(backend_ops, attention_tree_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    tree(*this, dtype::f32);
}
TEST_P(backend_ops, attention_tree_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    tree(*this, dtype::f16);
}
TEST_P(backend_ops, attention_ragged_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    ragged(*this, dtype::f32);
}
TEST_P(backend_ops, attention_ragged_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    ragged(*this, dtype::f16);
}

}  // namespace tandem::test
