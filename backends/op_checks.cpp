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

#undef require

}  // namespace tandem::checks
