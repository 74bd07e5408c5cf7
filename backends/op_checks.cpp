// Shape and type contracts of the backend ops (see backends/backend.h for the semantics).
#include "backends/op_checks.h"

#include <algorithm>
#include <sstream>

#include "engine/error.h"

namespace tandem::checks {

namespace {

std::string shape(const tensor& t) {
    std::ostringstream s;
    s << dtype_name(t.type) << "{" << t.ne[0] << "," << t.ne[1] << "," << t.ne[2] << "," << t.ne[3] << "}";
    return s.str();
}

[[noreturn]] void fail(const char* op, const std::string& what) { throw error(TANDEM_ERR_INTERNAL, std::string(op) + ": " + what); }

// A macro, not a function, so that the message is only built when the check fails: these checks run on every
// op of every forward pass, and building the strings eagerly cost ~7 us per op.
#define require(ok, op, what)           \
    do {                                \
        if (!(ok)) fail((op), (what));  \
    } while (0)

void in_bounds(const char* op, const char* name, const tensor& t) {
    require(t.buf != nullptr, op, std::string(name) + " has no buffer");
    for (auto d : t.ne) require(d >= 0, op, std::string(name) + " has a negative dimension " + shape(t));
    require(t.offset <= t.buf->size() && t.nbytes() <= t.buf->size() - t.offset, op,
            std::string(name) + " " + shape(t) + " at offset " + std::to_string(t.offset) + " overruns its buffer of " +
                std::to_string(t.buf->size()) + " bytes");
}

void is_type(const char* op, const char* name, const tensor& t, dtype want) {
    require(t.type == want, op, std::string(name) + " must be " + std::string(dtype_name(want)) + ", got " + shape(t));
}

}  // namespace

void get_rows(const tensor& table, const tensor& ids, const tensor& out) {
    const char* op = "get_rows";
    in_bounds(op, "table", table), in_bounds(op, "ids", ids), in_bounds(op, "out", out);
    is_type(op, "ids", ids, dtype::i32), is_type(op, "out", out, dtype::f32);
    require(out.ne[0] == table.ne[0] && out.nrows() == ids.nelements(), op,
            "shapes " + shape(table) + " " + shape(ids) + " -> " + shape(out));
}

void rms_norm(const tensor& x, const tensor& w, const tensor& out) {
    const char* op = "rms_norm";
    in_bounds(op, "x", x), in_bounds(op, "w", w), in_bounds(op, "out", out);
    is_type(op, "x", x, dtype::f32), is_type(op, "w", w, dtype::f32), is_type(op, "out", out, dtype::f32);
    require(w.nelements() == x.ne[0] && out.ne == x.ne, op, "shapes " + shape(x) + " " + shape(w) + " -> " + shape(out));
}

void matmul(const tensor& w, const tensor& x, const tensor& out) {
    const char* op = "matmul";
    in_bounds(op, "w", w), in_bounds(op, "x", x), in_bounds(op, "out", out);
    is_type(op, "x", x, dtype::f32), is_type(op, "out", out, dtype::f32);
    require(w.ne[0] == x.ne[0] && out.ne[0] == w.nrows() && out.nrows() == x.nrows(), op,
            "shapes " + shape(w) + " x " + shape(x) + " -> " + shape(out));
}

void rope(const tensor& x, const tensor& pos, const rope_params& p) {
    const char* op = "rope";
    in_bounds(op, "x", x), in_bounds(op, "pos", pos);
    is_type(op, "x", x, dtype::f32), is_type(op, "pos", pos, dtype::i32);
    require(pos.nelements() == x.ne[2] * x.ne[3], op, "pos " + shape(pos) + " does not match x " + shape(x));
    require(p.n_rot >= 0 && p.n_rot <= x.ne[0] && p.n_rot % 2 == 0, op,
            "n_rot " + std::to_string(p.n_rot) + " invalid for head size " + std::to_string(x.ne[0]));
}

void attention(const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta, const tensor& slots,
               const tensor& out) {
    const char* op = "attention";
    in_bounds(op, "q", q), in_bounds(op, "k_cache", k_cache), in_bounds(op, "v_cache", v_cache);
    in_bounds(op, "meta", meta), in_bounds(op, "slots", slots), in_bounds(op, "out", out);
    is_type(op, "q", q, dtype::f32), is_type(op, "out", out, dtype::f32);
    is_type(op, "meta", meta, dtype::i32), is_type(op, "slots", slots, dtype::i32);
    const int64_t d = q.ne[0], hq = q.ne[1], m = q.ne[2];
    require(k_cache.type == v_cache.type && k_cache.ne == v_cache.ne, op,
            "k_cache " + shape(k_cache) + " and v_cache " + shape(v_cache) + " differ");
    require(d > 0 && k_cache.ne[0] % d == 0, op, "cache row " + shape(k_cache) + " is not a multiple of head size");
    const int64_t hkv = k_cache.ne[0] / d;
    require(hkv > 0 && hq % hkv == 0, op, "query heads " + std::to_string(hq) + " not a multiple of kv heads " +
                                              std::to_string(hkv));
    require(meta.ne[0] == 4 && meta.nrows() >= m && slots.nelements() == meta.nrows(), op,
            "meta " + shape(meta) + " / slots " + shape(slots) + " do not cover " + std::to_string(m) + " rows");
    require(out.ne == q.ne, op, "out " + shape(out) + " differs from q " + shape(q));
}

void same_f32(const char* op, const tensor& a, const tensor& b, const tensor& out) {
    in_bounds(op, "a", a), in_bounds(op, "b", b), in_bounds(op, "out", out);
    is_type(op, "a", a, dtype::f32), is_type(op, "b", b, dtype::f32), is_type(op, "out", out, dtype::f32);
    require(a.nelements() == b.nelements() && a.nelements() == out.nelements(), op,
            "shapes " + shape(a) + " " + shape(b) + " -> " + shape(out));
}

void softmax(const tensor& x, const tensor& out) {
    in_bounds("softmax", "x", x), in_bounds("softmax", "out", out);
    is_type("softmax", "x", x, dtype::f32), is_type("softmax", "out", out, dtype::f32);
    require(x.ne == out.ne, "softmax", "shapes " + shape(x) + " -> " + shape(out));
}

void kv_write(const tensor& src, const tensor& cache, const tensor& slots) {
    const char* op = "kv_write";
    in_bounds(op, "src", src), in_bounds(op, "cache", cache), in_bounds(op, "slots", slots);
    is_type(op, "src", src, dtype::f32), is_type(op, "slots", slots, dtype::i32);
    require(src.ne[0] == cache.ne[0] && slots.nelements() == src.nrows(), op,
            "shapes " + shape(src) + " -> " + shape(cache) + " via " + shape(slots));
}

void kv_copy(const tensor& cache, const tensor& src, const tensor& dst) {
    const char* op = "kv_copy";
    in_bounds(op, "cache", cache), in_bounds(op, "src", src), in_bounds(op, "dst", dst);
    is_type(op, "src", src, dtype::i32), is_type(op, "dst", dst, dtype::i32);
    require(src.nelements() == dst.nelements(), op, "src " + shape(src) + " and dst " + shape(dst) + " differ");
}

void argmax(const tensor& x, const tensor& out) {
    in_bounds("argmax", "x", x), in_bounds("argmax", "out", out);
    is_type("argmax", "x", x, dtype::f32), is_type("argmax", "out", out, dtype::i32);
    require(out.nelements() == x.nrows() && x.ne[0] > 0, "argmax", "shapes " + shape(x) + " -> " + shape(out));
}

void top_k(const tensor& x, int32_t k, const tensor& out_ids, const tensor& out_vals) {
    const char* op = "top_k";
    in_bounds(op, "x", x), in_bounds(op, "out_ids", out_ids), in_bounds(op, "out_vals", out_vals);
    is_type(op, "x", x, dtype::f32), is_type(op, "out_ids", out_ids, dtype::i32);
    is_type(op, "out_vals", out_vals, dtype::f32);
    const int64_t limit = std::min<int64_t>(x.ne[0], top_k_max);
    if (k < 1 || k > limit) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT,
                    "top_k: k = " + std::to_string(k) + " outside [1, " + std::to_string(limit) + "] for rows of " +
                        std::to_string(x.ne[0]) + " (at most " + std::to_string(top_k_max) + ")");
    }
    require(out_ids.ne[0] == k && out_ids.nrows() == x.nrows() && out_vals.ne[0] == k && out_vals.nrows() == x.nrows(),
            op, "shapes " + shape(x) + " k=" + std::to_string(k) + " -> " + shape(out_ids) + " " + shape(out_vals));
}

// ---- training ops ----

void matmul_t(const tensor& w, const tensor& dy, const tensor& dx) {
    const char* op = "matmul_t";
    in_bounds(op, "w", w), in_bounds(op, "dy", dy), in_bounds(op, "dx", dx);
    is_type(op, "dy", dy, dtype::f32), is_type(op, "dx", dx, dtype::f32);
    require(dy.ne[0] == w.nrows() && dx.ne[0] == w.ne[0] && dx.nrows() == dy.nrows(), op,
            "shapes " + shape(w) + " ^T x " + shape(dy) + " -> " + shape(dx));
}

void weight_grad(const tensor& dy, const tensor& x, float beta, const tensor& dw) {
    const char* op = "weight_grad";
    in_bounds(op, "dy", dy), in_bounds(op, "x", x), in_bounds(op, "dw", dw);
    is_type(op, "dy", dy, dtype::f32), is_type(op, "x", x, dtype::f32), is_type(op, "dw", dw, dtype::f32);
    require(dy.nrows() == x.nrows() && dw.ne[0] == x.ne[0] && dw.nrows() == dy.ne[0], op,
            "shapes " + shape(dy) + " x " + shape(x) + " -> " + shape(dw));
    require(beta == 0.f || beta == 1.f, op, "beta must be 0 or 1, got " + std::to_string(beta));
}

void rms_norm_back(const tensor& x, const tensor& w, const tensor& dy, const tensor& dx) {
    const char* op = "rms_norm_back";
    in_bounds(op, "x", x), in_bounds(op, "w", w), in_bounds(op, "dy", dy), in_bounds(op, "dx", dx);
    is_type(op, "x", x, dtype::f32), is_type(op, "w", w, dtype::f32);
    is_type(op, "dy", dy, dtype::f32), is_type(op, "dx", dx, dtype::f32);
    require(w.nelements() == x.ne[0] && dy.ne == x.ne && dx.ne == x.ne, op,
            "shapes " + shape(x) + " " + shape(w) + " " + shape(dy) + " -> " + shape(dx));
}

void swiglu_back(const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate, const tensor& d_up) {
    const char* op = "swiglu_back";
    in_bounds(op, "gate", gate), in_bounds(op, "up", up), in_bounds(op, "dy", dy);
    in_bounds(op, "d_gate", d_gate), in_bounds(op, "d_up", d_up);
    for (const tensor* t : {&gate, &up, &dy, &d_gate, &d_up}) {
        is_type(op, "every tensor", *t, dtype::f32);
        require(t->nelements() == gate.nelements(), op,
                "shapes differ: " + shape(gate) + " " + shape(up) + " " + shape(dy) + " -> " + shape(d_gate) + " " +
                    shape(d_up));
    }
}

void attention_back(const tensor& q, const tensor& k, const tensor& v, const tensor& meta, const tensor& out,
                    const tensor& d_out, const tensor& dq, const tensor& dk, const tensor& dv) {
    const char* op = "attention_back";
    in_bounds(op, "q", q), in_bounds(op, "k", k), in_bounds(op, "v", v), in_bounds(op, "meta", meta);
    in_bounds(op, "out", out), in_bounds(op, "d_out", d_out);
    in_bounds(op, "dq", dq), in_bounds(op, "dk", dk), in_bounds(op, "dv", dv);
    for (const tensor* t : {&q, &k, &v, &out, &d_out, &dq, &dk, &dv}) is_type(op, "every float tensor", *t, dtype::f32);
    is_type(op, "meta", meta, dtype::i32);
    const int64_t d = q.ne[0], hq = q.ne[1], m = q.ne[2];
    require(q.ne[3] == 1, op, "q " + shape(q) + " must be {D, Hq, M}");
    require(k.ne == v.ne && dk.ne == k.ne && dv.ne == k.ne, op,
            "k " + shape(k) + ", v " + shape(v) + ", dk " + shape(dk) + ", dv " + shape(dv) + " differ");
    require(d > 0 && k.ne[0] % d == 0, op, "kv row " + shape(k) + " is not a multiple of head size");
    const int64_t hkv = k.ne[0] / d;
    require(hkv > 0 && hq % hkv == 0, op,
            "query heads " + std::to_string(hq) + " not a multiple of kv heads " + std::to_string(hkv));
    require(meta.ne[0] == 4 && meta.nrows() >= m, op,
            "meta " + shape(meta) + " does not cover " + std::to_string(m) + " rows");
    require(out.ne == q.ne && d_out.ne == q.ne && dq.ne == q.ne, op,
            "out " + shape(out) + ", d_out " + shape(d_out) + ", dq " + shape(dq) + " differ from q " + shape(q));
}

void attention_back_rows(const int32_t* meta, int64_t m, int64_t n_slots) {
    for (int64_t r = 0; r < m; ++r) {
        const int64_t begin = meta[4 * r], len = meta[4 * r + 1], tree = meta[4 * r + 2];
        if (tree != -1) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention_back: row " + std::to_string(r) +
                                                         " walks a token tree (tree = " + std::to_string(tree) +
                                                         "); only contiguous runs have a backward pass");
        }
        if (begin < 0 || len < 0 || begin + len > n_slots) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention_back: row " + std::to_string(r) + " sees slots [" +
                                                         std::to_string(begin) + ", " + std::to_string(begin + len) +
                                                         ") outside [0, " + std::to_string(n_slots) + ")");
        }
    }
}

void get_rows_back(const tensor& d_out, const tensor& ids, const tensor& d_table) {
    const char* op = "get_rows_back";
    in_bounds(op, "d_out", d_out), in_bounds(op, "ids", ids), in_bounds(op, "d_table", d_table);
    is_type(op, "d_out", d_out, dtype::f32), is_type(op, "ids", ids, dtype::i32);
    is_type(op, "d_table", d_table, dtype::f32);
    require(d_table.ne[0] == d_out.ne[0] && d_out.nrows() == ids.nelements(), op,
            "shapes " + shape(d_out) + " via " + shape(ids) + " -> " + shape(d_table));
}

void cross_entropy(const tensor& z, const tensor& ids, const tensor& p, const tensor& loss, const tensor& d_logits) {
    const char* op = "cross_entropy";
    in_bounds(op, "z", z), in_bounds(op, "ids", ids), in_bounds(op, "p", p);
    in_bounds(op, "loss", loss), in_bounds(op, "d_logits", d_logits);
    is_type(op, "z", z, dtype::f32), is_type(op, "ids", ids, dtype::i32), is_type(op, "p", p, dtype::f32);
    is_type(op, "loss", loss, dtype::f32), is_type(op, "d_logits", d_logits, dtype::f32);
    require(z.ne[0] > 0 && ids.ne[0] > 0 && ids.ne == p.ne && ids.nrows() == z.nrows() &&
                loss.nelements() == z.nrows() && d_logits.ne == z.ne,
            op,
            "shapes z " + shape(z) + " ids " + shape(ids) + " p " + shape(p) + " -> loss " + shape(loss) +
                " d_logits " + shape(d_logits));
}

void adamw(const tensor& param, const tensor& grad, const tensor& m, const tensor& v, const adamw_params& p) {
    const char* op = "adamw";
    in_bounds(op, "param", param), in_bounds(op, "grad", grad), in_bounds(op, "m", m), in_bounds(op, "v", v);
    for (const tensor* t : {&param, &grad, &m, &v}) {
        is_type(op, "every tensor", *t, dtype::f32);
        require(t->nelements() == param.nelements(), op,
                "shapes differ: " + shape(param) + " " + shape(grad) + " " + shape(m) + " " + shape(v));
    }
    require(p.step >= 1, op, "step must be >= 1 (1-based), got " + std::to_string(p.step));
}

void scale(const tensor& x, const tensor& out) {
    in_bounds("scale", "x", x), in_bounds("scale", "out", out);
    is_type("scale", "x", x, dtype::f32), is_type("scale", "out", out, dtype::f32);
    require(x.nelements() == out.nelements(), "scale", "shapes " + shape(x) + " -> " + shape(out));
}

void sum_sq(const tensor& x, const tensor& out) {
    in_bounds("sum_sq", "x", x), in_bounds("sum_sq", "out", out);
    is_type("sum_sq", "x", x, dtype::f32), is_type("sum_sq", "out", out, dtype::f32);
    require(out.nelements() == 1, "sum_sq", "out " + shape(out) + " must hold one element");
}

#undef require

}  // namespace tandem::checks
