// The perf cases of perf_cases.h. Bytes are the least memory traffic of one run: every input element read once
// and every output element written once, except GEMV, whose bytes are the packed weights alone (the activations
// and outputs are a few KiB against MiBs), and attention, which reads the K and V rows each query row may see
// once. Tolerances only matter for the optional check against cpu_ref (tandem-bench ops --check).
#include "tests/backend_ops/perf_cases.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <tuple>

#include "engine/quantize.h"
#include "tests/backend_ops/cases.h"

namespace tandem::test {

namespace {

struct shapes {
    int64_t hidden, ffn, heads, head_dim, vocab, table_rows, gemm_rows[2], cache[2], tree_nodes, tree_prefix;
};
// A 7B llama (the full list) and a model small enough for cpu_ref in a smoke test.
constexpr shapes full{4096, 11008, 32, 128, 32000, 4096, {64, 512}, {512, 2048}, 64, 512};
constexpr shapes tiny{256, 512, 4, 32, 1000, 64, {3, 9}, {16, 40}, 8, 16};

std::string ne_str(int64_t m, int64_t k, int64_t n) {
    return " M=" + std::to_string(m) + " K=" + std::to_string(k) + " N=" + std::to_string(n);
}

// The weights of the matmul cases: the most recent (type, K, N) is kept, so the three row counts of one weight
// matrix share its data. Quantizing 45M values takes seconds; the cases run in list order.
struct weight_memo {
    explicit weight_memo(uint64_t s) : seed(s) {}
    uint64_t seed;
    std::tuple<dtype, int64_t, int64_t> key{dtype::f32, -1, -1};
    std::shared_ptr<const arg> w;
    std::shared_ptr<const arg> get(dtype t, int64_t k, int64_t n) {
        if (!w || key != std::make_tuple(t, k, n)) {
            w.reset();  // release the old matrix before building the next
            rng r(seed ^ (uint64_t(t) << 32) ^ uint64_t(n));
            w = std::make_shared<const arg>(t == dtype::f32 || t == dtype::f16 ? random_arg(r, t, {k, n, 1, 1})
                                                                               : quantized_arg(r, t, {k, n, 1, 1}));
            key = {t, k, n};
        }
        return w;
    }
};

void add_matmuls(std::vector<perf_case>& out, const shapes& s, uint64_t seed) {
    auto memo = std::make_shared<weight_memo>(seed);
    for (dtype t : {dtype::f32, dtype::f16, dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k}) {
        for (int64_t n : {s.hidden, s.ffn}) {
            const int64_t k = s.hidden;
            for (int64_t m : {int64_t(1), s.gemm_rows[0], s.gemm_rows[1]}) {
                perf_case p;
                p.name = "matmul_" + std::string(dtype_name(t)) + "_f32" + ne_str(m, k, n);
                p.o = op::matmul, p.t = t, p.m = m, p.n = n, p.k = k;
                p.flops = 2.0 * double(m) * double(n) * double(k);
                const double wbytes = double(dtype_row_bytes(t, k)) * double(n);
                p.bytes = m == 1 ? wbytes : wbytes + 4.0 * double(m) * double(k + n);
                p.bound = m == 1 ? perf_bound::memory : perf_bound::compute;
                p.build = [memo, t, k, n, m, seed] {
                    rng r(seed + uint64_t(m));
                    // Prepared, as a model's weights are (backend::prepare_weight, untimed).
                    op_case c = prepared(matmul_case(r, *memo->get(t, k, n), m));
                    if (t != dtype::f32 && t != dtype::f16) {
                        // The cpu backend may quantize the activations to Q8 blocks: an error of sigma <= 1.3e-3 *
                        // sqrt(K) per output (cases_quant.cpp); allow 10 sigma. Outputs have mean square ~K/9.
                        c.tol = {1e-4, 1.3e-2 * std::sqrt(double(k)) + 1e-3};
                    }
                    return c;
                };
                out.push_back(std::move(p));
            }
        }
    }
}

// q {D, Hq, M} against a cache of S slots of D * Hkv (no GQA: a 7B llama has 32 kv heads).
void add_attention(std::vector<perf_case>& out, const shapes& s, uint64_t seed) {
    const int64_t d = s.head_dim, h = s.heads;
    auto add = [&](const std::string& kind, dtype cache, int64_t n_slots, std::function<attention_rows(rng&)> rows) {
        rng r0(seed);
        const attention_rows layout = rows(r0);
        // Slots each query row sees: its contiguous run plus its tree walk.
        const auto meta = layout.table_meta();
        double seen = 0;
        for (int64_t m = 0; m < layout.size(); ++m) {
            seen += meta[size_t(4 * m + 1)];
            for (int64_t j = meta[size_t(4 * m + 2)]; j >= 0; j = meta[size_t(4 * j + 3)]) seen += 1;
        }
        // Cache rows read at least once: the union of every row's run and walk.
        const std::vector<int32_t> slots = layout.table_slots();
        std::vector<bool> read(size_t(n_slots), false);
        for (int64_t m = 0; m < layout.size(); ++m) {
            for (int64_t i = 0; i < meta[size_t(4 * m + 1)]; ++i) read[size_t(meta[size_t(4 * m)] + i)] = true;
            for (int64_t j = meta[size_t(4 * m + 2)]; j >= 0; j = meta[size_t(4 * j + 3)])
                read[size_t(slots[size_t(j)])] = true;
        }
        const double distinct = double(std::count(read.begin(), read.end(), true));
        const double esize = cache == dtype::f16 ? 2 : 4;
        perf_case p;
        p.name = "attention_" + kind + "_" + std::string(dtype_name(cache)) + " D=" + std::to_string(d) +
                 " H=" + std::to_string(h) + " M=" + std::to_string(layout.size()) + " S=" + std::to_string(n_slots);
        p.o = op::attention, p.t = cache;
        p.flops = 4.0 * double(h * d) * seen;  // q.k and the weighted sum of v: 2 flops each per element
        p.bytes = 2.0 * distinct * double(d * h) * esize + 8.0 * double(d * h * layout.size());
        p.bound = perf_bound::memory;
        p.build = [=, name = p.name] {
            rng r(seed + 7);
            return attention_case(r, name, attention_shape{d, h, h, n_slots, cache, 1.f}, layout);
        };
        out.push_back(std::move(p));
    };
    for (int64_t ctx : {s.cache[0], s.cache[1]}) {
        for (dtype cache : {dtype::f16, dtype::f32}) {
            add("decode", cache, ctx, [ctx](rng&) {
                attention_rows rows;
                rows.add_chain(0, ctx - 1, 1);
                return rows;
            });
        }
    }
    const int64_t nodes = s.tree_nodes, prefix = s.tree_prefix;
    add("tree", dtype::f16, prefix + nodes, [=](rng& r) {
        attention_rows rows;
        rows.add_tree(r, 0, prefix, nodes, 8, false);
        return rows;
    });
}

// An f32 op over tensors of one shape {K, M}: `inputs` random inputs, then one output (or in place on input 0).
perf_case elementwise(const std::string& variant, op o, int64_t k, int64_t m, int inputs, bool in_place, uint64_t seed,
                      std::function<void(backend&, const std::vector<tensor>&)> run, tolerance tol) {
    perf_case p;
    p.name = variant + " K=" + std::to_string(k) + " M=" + std::to_string(m);
    p.o = o;
    p.bytes = 4.0 * double(k * m) * (inputs + 1);
    p.build = [=, name = p.name] {
        rng r(seed);
        op_case c;
        c.desc = name;
        for (int i = 0; i < inputs; ++i) c.args.push_back(random_arg(r, dtype::f32, {k, m, 1, 1}));
        if (!in_place) c.args.push_back(output_arg(dtype::f32, {k, m, 1, 1}));
        c.outputs = {in_place ? 0 : inputs};
        c.tol = tol;
        c.run = run;
        return c;
    };
    return p;
}

void add_rows_ops(std::vector<perf_case>& out, const shapes& s, uint64_t seed) {
    for (int64_t m : {int64_t(1), s.gemm_rows[1]}) {
        // rms_norm: x, out {hidden, M} and the weights {hidden}.
        perf_case rn = elementwise("rms_norm_f32_f32", op::rms_norm, s.hidden, m, 1, false, seed, {}, {});
        rn.bytes += 4.0 * double(s.hidden);
        const int64_t k = s.hidden;
        rn.build = [k, m, seed, name = rn.name] {
            rng r(seed);
            op_case c;
            c.desc = name;
            c.args = {random_arg(r, dtype::f32, {k, m, 1, 1}), random_arg(r, dtype::f32, {k, 1, 1, 1}),
                      output_arg(dtype::f32, {k, m, 1, 1})};
            c.outputs = {2};
            c.tol = {1e-10, 5e-5};  // as in cases_elementwise.cpp
            c.run = [](backend& b, const std::vector<tensor>& a) { b.rms_norm(a[0], a[1], 1e-5f, a[2]); };
            return c;
        };
        out.push_back(std::move(rn));

        // rope in place on q {head_dim, heads, M}, positions up to the context.
        perf_case rp;
        rp.name = "rope_f32_f32 D=" + std::to_string(s.head_dim) + " H=" + std::to_string(s.heads) +
                  " M=" + std::to_string(m);
        rp.o = op::rope;
        rp.bytes = 8.0 * double(s.head_dim * s.heads * m) + 4.0 * double(m);
        rp.build = [d = s.head_dim, h = s.heads, m, seed, name = rp.name] {
            rng r(seed);
            std::vector<int32_t> pos(static_cast<size_t>(m));
            for (auto& v : pos) v = int32_t(r.integer(0, 2047));
            op_case c;
            c.desc = name;
            c.args = {random_arg(r, dtype::f32, {d, h, m, 1}), i32_arg({m, 1, 1, 1}, pos)};
            c.outputs = {0};
            c.tol = {1e-8, 2e-3};  // angles up to 2048 rad: rounding of ~1e-4 rad (cases_elementwise.cpp)
            rope_params p;
            p.n_rot = int32_t(d);
            c.run = [p](backend& b, const std::vector<tensor>& a) { b.rope(a[0], a[1], p); };
            return c;
        };
        out.push_back(std::move(rp));

        out.push_back(elementwise("swiglu_f32_f32", op::swiglu, s.ffn, m, 2, false, seed,
                                  [](backend& b, const std::vector<tensor>& a) { b.swiglu(a[0], a[1], a[2]); },
                                  {1e-12, 1e-6}));
        out.push_back(elementwise("add_f32_f32", op::add, s.hidden, m, 2, false, seed,
                                  [](backend& b, const std::vector<tensor>& a) { b.add(a[0], a[1], a[2]); }, {0, 0}));
    }
    out.push_back(elementwise("softmax_f32_f32", op::softmax, s.vocab, 1, 1, false, seed,
                              [](backend& b, const std::vector<tensor>& a) { b.softmax(a[0], a[1]); }, {1e-9, 1e-6}));
}

void add_lookups(std::vector<perf_case>& out, const shapes& s, uint64_t seed) {
    // get_rows: M token ids into an embedding table (only its M rows are read; the vocabulary size does not
    // change the work, so the table has table_rows rows).
    for (dtype t : {dtype::f32, dtype::f16, dtype::q8_0, dtype::q4_0}) {
        const int64_t k = s.hidden, rows = s.table_rows, m = s.gemm_rows[1];
        perf_case p;
        p.name = "get_rows_" + std::string(dtype_name(t)) + "_f32 K=" + std::to_string(k) + " M=" + std::to_string(m) +
                 " rows=" + std::to_string(rows);
        p.o = op::get_rows, p.t = t;
        p.bytes = double(m) * (double(dtype_row_bytes(t, k)) + 4.0 * double(k) + 4.0);
        p.build = [=, name = p.name] {
            rng r(seed);
            std::vector<int32_t> ids(static_cast<size_t>(m));
            for (auto& v : ids) v = int32_t(r.integer(0, rows - 1));
            op_case c;
            c.desc = name;
            c.args = {t == dtype::f32 || t == dtype::f16 ? random_arg(r, t, {k, rows, 1, 1})
                                                         : quantized_arg(r, t, {k, rows, 1, 1}),
                      i32_arg({m, 1, 1, 1}, ids), output_arg(dtype::f32, {k, m, 1, 1})};
            c.outputs = {2};
            c.tol = {};  // dequantization is exact in f32
            c.run = [](backend& b, const std::vector<tensor>& a) { b.get_rows(a[0], a[1], a[2]); };
            return c;
        };
        out.push_back(std::move(p));
    }
    // kv_write: M rows of K and V width into an f16 cache of the longer context.
    for (int64_t m : {int64_t(1), s.gemm_rows[0]}) {
        const int64_t k = s.hidden, n_slots = s.cache[1];
        perf_case p;
        p.name =
            "kv_write_f32_f16 K=" + std::to_string(k) + " M=" + std::to_string(m) + " S=" + std::to_string(n_slots);
        p.o = op::kv_write, p.t = dtype::f16;
        p.bytes = double(m) * (4.0 * double(k) + 2.0 * double(k) + 4.0);
        p.build = [=, name = p.name] {
            rng r(seed);
            std::vector<int32_t> slots(static_cast<size_t>(m));
            std::iota(slots.begin(), slots.end(), int32_t(n_slots / 3));
            op_case c;
            c.desc = name;
            c.args = {random_arg(r, dtype::f32, {k, m, 1, 1}), random_arg(r, dtype::f16, {k, n_slots, 1, 1}),
                      i32_arg({m, 1, 1, 1}, slots)};
            c.outputs = {1};
            c.tol = {1e-8, 2e-3};  // ties rounded differently may move an element by one f16 ulp
            c.run = [](backend& b, const std::vector<tensor>& a) { b.kv_write(a[0], a[1], a[2]); };
            return c;
        };
        out.push_back(std::move(p));
    }
    // argmax and top_k over one row of logits.
    {
        perf_case p;
        p.name = "argmax_f32_i32 K=" + std::to_string(s.vocab) + " M=1";
        p.o = op::argmax;
        p.bytes = 4.0 * double(s.vocab) + 4.0;
        p.build = [k = s.vocab, seed, name = p.name] {
            rng r(seed);
            op_case c;
            c.desc = name;
            c.args = {random_arg(r, dtype::f32, {k, 1, 1, 1}, -10.f, 10.f), output_arg(dtype::i32, {1, 1, 1, 1})};
            c.outputs = {1};
            c.run = [](backend& b, const std::vector<tensor>& a) { b.argmax(a[0], a[1]); };
            return c;
        };
        out.push_back(std::move(p));
    }
    {
        const int32_t top = 40;
        perf_case p;
        p.name = "top_k_f32_i32 K=" + std::to_string(s.vocab) + " M=1 k=" + std::to_string(top);
        p.o = op::top_k;
        p.bytes = 4.0 * double(s.vocab) + 8.0 * top;
        p.build = [k = s.vocab, seed, top, name = p.name] {
            rng r(seed);
            op_case c;
            c.desc = name;
            c.args = {random_arg(r, dtype::f32, {k, 1, 1, 1}, -10.f, 10.f), output_arg(dtype::i32, {top, 1, 1, 1}),
                      output_arg(dtype::f32, {top, 1, 1, 1})};
            c.outputs = {1, 2};
            c.run = [top](backend& b, const std::vector<tensor>& a) { b.top_k(a[0], top, a[1], a[2]); };
            return c;
        };
        out.push_back(std::move(p));
    }
}

}  // namespace

std::vector<perf_case> perf_cases(bool smoke, uint64_t seed) {
    const shapes& s = smoke ? tiny : full;
    std::vector<perf_case> out;
    add_matmuls(out, s, seed);
    add_attention(out, s, seed);
    add_rows_ops(out, s, seed);
    add_lookups(out, s, seed);
    return out;
}

}  // namespace tandem::test
