// The case builders shared by the op-family tests, the harness self-test and the perf cases of tandem-bench:
// matmul, attention layouts and attention cases, quantized weights.
#include <cmath>

#include "engine/quantize.h"
#include "tests/backend_ops/cases.h"

namespace tandem::test {

op_case matmul_case(rng& r, const arg& w, int64_t m) {
    const int64_t k = w.ne[0], n = w.ne[1];
    op_case c;
    c.desc = "matmul_" + std::string(dtype_name(w.type)) + "_f32 M=" + std::to_string(m) + " K=" + std::to_string(k) +
             " N=" + std::to_string(n);
    c.args = {w, random_arg(r, dtype::f32, {k, m, 1, 1}), output_arg(dtype::f32, {n, m, 1, 1})};
    c.outputs = {2};
    // Inputs in [-1, 1]: only the summation order differs (f16 -> f32 is exact), so the error of a dot
    // product of K terms stays around 1e-7 * K; a single dropped or doubled term (~0.3) is far above.
    c.tol = {1e-10, 2e-6 * double(k) + 1e-6};
    c.run = [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); };
    return c;
}

op_case prepared(op_case c) {
    c.desc += " prepared";
    c.prepare = [](backend& b, const std::vector<tensor>& t) { b.prepare_weight(t[0]); };
    return c;
}

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

arg quantized_arg(rng& r, dtype t, std::array<int64_t, 4> ne) {
    return quantized_arg(t, ne, random_floats(r, ne[0] * ne[1] * ne[2] * ne[3]));
}

arg quantized_arg(dtype t, std::array<int64_t, 4> ne, const std::vector<float>& values) {
    arg a;
    a.type = t;
    a.ne = ne;
    const size_t rb = dtype_row_bytes(t, ne[0]);
    a.bytes.resize(rb * size_t(ne[1] * ne[2] * ne[3]));
    for (int64_t row = 0; row < ne[1] * ne[2] * ne[3]; ++row) {
        quantize_row(t, values.data() + row * ne[0], a.bytes.data() + size_t(row) * rb, ne[0]);
    }
    return a;
}

}  // namespace tandem::test
