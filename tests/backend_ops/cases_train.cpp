// Cases of the training ops (backward passes, loss, optimizer): matmul_t per weight type, weight_grad, rms_norm_back,
// swiglu_back, attention_back over causal, ragged and GQA layouts, get_rows_back, cross_entropy, adamw, scale and
// sum_sq, plus rope at negative positions (rope's backward). cpu_ref accumulates these in double, so each tolerance
// below is the float rounding of a correct kernel with a margin, and is far below what a wrong formula moves.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "backends/op_checks.h"
#include "tests/backend_ops/cases.h"
#include "tests/backend_ops/harness.h"

namespace tandem::test {

namespace {

using ne4 = std::array<int64_t, 4>;
using run_fn = std::function<void(backend&, const std::vector<tensor>&)>;

std::string kmn(int64_t k, int64_t m, int64_t n) {
    return " K=" + std::to_string(k) + " M=" + std::to_string(m) + " N=" + std::to_string(n);
}

// ---- matmul_t / weight_grad ----

op_case matmul_t_case(rng& r, dtype t, int64_t k, int64_t n, int64_t m) {
    op_case c;
    c.desc = "matmul_t_" + std::string(dtype_name(t)) + "_f32" + kmn(k, m, n);
    const ne4 wne{k, n, 1, 1};
    c.args = {t == dtype::f32 || t == dtype::f16 ? random_arg(r, t, wne) : quantized_arg(r, t, wne),
              random_arg(r, dtype::f32, {n, m, 1, 1}), output_arg(dtype::f32, {k, m, 1, 1})};
    c.outputs = {2};
    c.wrap_inputs = true;  // the frozen base weight is model memory (wrap_host), as in the forward matmul
    // Each output sums N products of magnitude <= 1 (the dequantized weights are the same numbers everywhere).
    // Float accumulation in any order is off by <= N * 6e-8 * max|term|; 1e-6 * N leaves a 16x margin. A
    // dropped or doubled term moves an output by ~1/3 (and the NMSE by >= 1e-3 / N); a transposed index is O(1).
    c.tol = {1e-9, 1e-6 * double(n) + 1e-6};
    c.run = [](backend& b, const std::vector<tensor>& a) { b.matmul_t(a[0], a[1], a[2]); };
    return c;
}

void matmul_t_sweep(backend_ops& t, dtype type) {
    const bool kq = type == dtype::q4_k || type == dtype::q6_k;
    const bool block = type != dtype::f32 && type != dtype::f16;
    // K must be whole blocks (32, or 256 for the K-quants); f32/f16 also get odd K.
    std::vector<int64_t> ks = kq      ? std::vector<int64_t>{256, 768}
                              : block ? std::vector<int64_t>{32, 96, 1056}
                                      : std::vector<int64_t>{1, 33, 96, 1056};
    for (int64_t k : ks) {
        for (int64_t n : {1, 7, 33, 257}) {
            for (int64_t m : {1, 5, 67}) t.check(matmul_t_case(t.random(), type, k, n, m));
        }
    }
    // A projection-shaped case: a long reduction over N (an FFN down projection's transpose).
    t.check(matmul_t_case(t.random(), type, kq ? 512 : 288, 2049, 9));
}

op_case weight_grad_case(rng& r, int64_t k, int64_t n, int64_t m, float alpha, float beta) {
    op_case c;
    c.desc = "weight_grad_f32_f32" + kmn(k, m, n) + " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta);
    // beta = 0: dw starts as NaN (output_arg) and must not be read. beta = 1: dw holds an earlier gradient.
    c.args = {random_arg(r, dtype::f32, {n, m, 1, 1}), random_arg(r, dtype::f32, {k, m, 1, 1}),
              beta == 0.f ? output_arg(dtype::f32, {k, n, 1, 1}) : random_arg(r, dtype::f32, {k, n, 1, 1})};
    c.outputs = {2};
    // Sums of M products of magnitude <= 1, scaled by |alpha| <= 1, plus dw (<= 1): float rounding <= M * 6e-8 +
    // an ulp of the sum; 1e-6 * M is a 16x margin. A missing alpha, beta or row m is >= 1e-2 relative.
    c.tol = {1e-9, 1e-6 * double(m) + 1e-6};
    c.run = [alpha, beta](backend& b, const std::vector<tensor>& a) { b.weight_grad(a[0], a[1], alpha, beta, a[2]); };
    return c;
}

// ---- rms_norm_back / swiglu_back ----

// alias: dx is dy (the op overwrites the incoming gradient).
op_case rms_norm_back_case(rng& r, int64_t k, int64_t m, float mag, bool alias) {
    op_case c;
    c.desc = "rms_norm_back_f32_f32 K=" + std::to_string(k) + " M=" + std::to_string(m) +
             " |x|<=" + std::to_string(mag) + (alias ? " dx=dy" : "");
    c.args = {random_arg(r, dtype::f32, {k, m, 1, 1}, -mag, mag), random_arg(r, dtype::f32, {k, 1, 1, 1}, -2.f, 2.f),
              random_arg(r, dtype::f32, {k, m, 1, 1})};
    if (!alias) c.args.push_back(output_arg(dtype::f32, {k, m, 1, 1}));
    const int dx = alias ? 2 : 3;
    c.outputs = {dx};
    // Outputs are ~ r * |w| * |dy| with r = 1 / sqrt(mean(x^2) + eps) (r ~ 300 at |x| <= 1e-3, where eps dominates).
    // Two reordered sums over K (~1e-6 relative each) feed them: 1e-5 * r * 2 bounds a correct kernel, NMSE 1e-10
    // (seen ~1e-13). The second term alone is ~1/sqrt(K) of the first (NMSE >= 1e-4 at K = 4097) and a dropped
    // eps changes r by 5x at |x| <= 1e-3.
    // The NMSE is relative to the outputs, which the second term cancels down to ~(1 - 1/K) of the first on
    // average: at K < 8 a row may cancel almost entirely, and at K = 1 with |x| >> sqrt(eps) the exact gradient is
    // ~0 (x^2 r^2 ~ 1), so there only the absolute bound (relative to the terms) applies.
    const double r_est = 1.0 / std::sqrt(double(mag) * mag / 3.0 + 1e-5);
    c.tol = {k == 1 ? 1e300 : k < 8 ? 1e-6 : 1e-10, 2e-5 * r_est};
    c.run = [dx](backend& b, const std::vector<tensor>& a) { b.rms_norm_back(a[0], a[1], a[2], 1e-5f, a[dx]); };
    return c;
}

// alias 0: separate outputs; 1: d_gate = gate, d_up = up; 2: d_gate = dy, d_up = up.
op_case swiglu_back_case(rng& r, int64_t n, int64_t m, float mag, int alias) {
    static const char* names[] = {"", " d_gate=gate d_up=up", " d_gate=dy d_up=up"};
    op_case c;
    c.desc = "swiglu_back_f32_f32 K=" + std::to_string(n) + " M=" + std::to_string(m) + " |g|<=" + std::to_string(mag) +
             names[alias];
    const ne4 ne{n, m, 1, 1};
    c.args = {random_arg(r, dtype::f32, ne, -mag, mag), random_arg(r, dtype::f32, ne, -mag, mag),
              random_arg(r, dtype::f32, ne)};
    int dg = 0, du = 1;
    if (alias == 0) {
        c.args.push_back(output_arg(dtype::f32, ne)), c.args.push_back(output_arg(dtype::f32, ne));
        dg = 3, du = 4;
    } else if (alias == 2) {
        dg = 2;
    }
    c.outputs = {dg, du};
    // d_gate <= ~1.1 |u| and d_up <= |g| (|dy| <= 1): outputs up to ~mag. A float sigmoid is a few ulp off (vector
    // exp), so 4e-6 * mag bounds the error; a wrong derivative (e.g. s instead of s * (1 + g (1 - s))) is O(1).
    c.tol = {1e-11, 4e-6 * double(mag)};
    c.run = [dg, du](backend& b, const std::vector<tensor>& a) { b.swiglu_back(a[0], a[1], a[2], a[dg], a[du]); };
    return c;
}

// ---- attention_back ----

// Contiguous runs, one per query row: row m sees slots [begin[m], begin[m] + len[m]).
struct runs {
    std::vector<int32_t> meta;
    void add(int64_t begin, int64_t len) { meta.insert(meta.end(), {int32_t(begin), int32_t(len), -1, -1}); }
    // A sequence stored at [base, base + committed + n_new): its n_new newest tokens as causal query rows.
    void chain(int64_t base, int64_t committed, int64_t n_new) {
        for (int64_t i = 0; i < n_new; ++i) add(base, committed + i + 1);
    }
    int64_t size() const { return int64_t(meta.size() / 4); }
};

// The forward output the backward needs, computed by cpu_ref's attention from the same q, k, v.
std::vector<uint8_t> forward_out(const arg& q, const arg& k, const arg& v, const arg& meta) {
    auto b = make_backend("cpu_ref");
    const int64_t m = q.ne[2];
    std::vector<int32_t> zeros(static_cast<size_t>(m), 0);  // slots: only tree walks read them
    const arg slots = i32_arg({m, 1, 1, 1}, zeros), out = output_arg(dtype::f32, q.ne);
    std::vector<std::unique_ptr<buffer>> bufs;
    std::vector<tensor> ts;
    for (const arg* a : {&q, &k, &v, &meta, &slots, &out}) {
        bufs.push_back(b->wrap_host(a->bytes.data(), a->nbytes()));
        tensor t;
        t.buf = bufs.back().get(), t.type = a->type, t.ne = a->ne;
        ts.push_back(t);
    }
    auto res = b->alloc(out.nbytes());
    ts[5].buf = res.get();
    attention_params p;
    p.scale = 1.f / std::sqrt(float(q.ne[0]));
    b->attention(ts[0], ts[1], ts[2], ts[3], ts[4], p, ts[5]);
    std::vector<uint8_t> bytes(out.nbytes());
    b->download(*res, 0, bytes.data(), bytes.size());
    return bytes;
}

op_case attention_back_case(rng& r, const std::string& kind, int64_t d, int64_t hq, int64_t hkv, int64_t n_slots,
                            const runs& rows, float q_scale) {
    const int64_t m = rows.size();
    op_case c;
    c.desc = "attention_back_f32 " + kind + " D=" + std::to_string(d) + " Hq=" + std::to_string(hq) +
             " Hkv=" + std::to_string(hkv) + " S=" + std::to_string(n_slots) + " M=" + std::to_string(m) +
             " qscale=" + std::to_string(q_scale);
    const arg q = random_arg(r, dtype::f32, {d, hq, m, 1}, -q_scale, q_scale);
    const arg k = random_arg(r, dtype::f32, {d * hkv, n_slots, 1, 1});
    const arg v = random_arg(r, dtype::f32, {d * hkv, n_slots, 1, 1});
    const arg meta = i32_arg({4, m, 1, 1}, rows.meta);
    arg out;
    out.type = dtype::f32, out.ne = q.ne, out.bytes = forward_out(q, k, v, meta);
    c.args = {q,
              k,
              v,
              meta,
              out,
              random_arg(r, dtype::f32, q.ne),
              output_arg(dtype::f32, q.ne),
              output_arg(dtype::f32, k.ne),
              output_arg(dtype::f32, k.ne)};
    c.outputs = {6, 7, 8};
    // dq, dk, dv are sums over a row's slots (or a slot's rows and grouped heads) of terms <= ~1 weighted by softmax
    // probabilities: outputs of ~1e-2 .. 1. A float kernel with an online softmax is ~1e-6 relative off (NMSE
    // ~1e-12, max error ~1e-6 seen); 1e-4 absolute / NMSE 1e-9 leave margin. One slot missed or counted twice
    // among 1100 moves dq by ~1e-3 relative (NMSE ~1e-6) and that slot's dk/dv by 100%; a missing scale is O(1).
    c.tol = {1e-9, 1e-4};
    c.run = [d](backend& b, const std::vector<tensor>& a) {
        attention_params p;
        p.scale = 1.f / std::sqrt(float(d));
        b.attention_back(a[0], a[1], a[2], a[3], a[4], a[5], p, a[6], a[7], a[8]);
    };
    return c;
}

// ---- get_rows_back / cross_entropy ----

op_case get_rows_back_case(rng& r, int64_t k, int64_t n_rows, int64_t m) {
    std::vector<int32_t> ids(static_cast<size_t>(m));
    for (auto& id : ids) id = int32_t(r.integer(0, n_rows - 1));
    if (m > 1) ids[1] = ids[0];  // a repeated id, whatever the draw
    op_case c;
    c.desc =
        "get_rows_back_f32_f32 K=" + std::to_string(k) + " R=" + std::to_string(n_rows) + " M=" + std::to_string(m);
    c.args = {random_arg(r, dtype::f32, {k, m, 1, 1}), i32_arg({m, 1, 1, 1}, ids),
              random_arg(r, dtype::f32, {k, n_rows, 1, 1})};
    c.outputs = {2};
    // Float additions in increasing m (backend.h): a kernel following the contract is bit-exact; one that sums the
    // repeats of an id before adding them may differ by an ulp of sums <= ~M (1e-6 at M <= 200). A lost or
    // doubled row is off by ~0.5.
    c.tol = {1e-12, 1e-6 * std::max<double>(1.0, double(m) / 16)};
    c.run = [](backend& b, const std::vector<tensor>& a) { b.get_rows_back(a[0], a[1], a[2]); };
    return c;
}

// Rows of logits in [-mag, mag]; k targets per row (distinct ids); every third row masked (p = 0) when masked.
op_case cross_entropy_case(rng& r, int64_t n_vocab, int64_t m, int32_t k, float mag, float grad_scale, bool masked,
                           bool alias) {
    std::vector<int32_t> ids;
    std::vector<float> p;
    for (int64_t row = 0; row < m; ++row) {
        std::vector<int32_t> picked;
        while (int32_t(picked.size()) < k) {
            const auto id = int32_t(r.integer(0, n_vocab - 1));
            if (std::find(picked.begin(), picked.end(), id) == picked.end()) picked.push_back(id);
        }
        if (row == 0) picked[0] = int32_t(n_vocab - 1);  // the last column is a target somewhere
        // A hard label (p = 1) or a teacher's top-k holding 60..95% of its mass.
        std::vector<float> w(static_cast<size_t>(k));
        for (auto& x : w) x = r.uniform(0.05f, 1.f);
        const float total = std::accumulate(w.begin(), w.end(), 0.f), mass = k == 1 ? 1.f : r.uniform(0.6f, 0.95f);
        const bool off = masked && row % 3 == 1;
        for (int32_t j = 0; j < k; ++j) {
            ids.push_back(picked[size_t(j)]);
            p.push_back(off ? 0.f : w[size_t(j)] / total * mass);
        }
    }
    op_case c;
    c.desc = "cross_entropy_f32_f32 V=" + std::to_string(n_vocab) + " M=" + std::to_string(m) +
             " k=" + std::to_string(k) + " |z|<=" + std::to_string(mag) + " grad_scale=" + std::to_string(grad_scale) +
             (masked ? " masked-rows" : "") + (alias ? " d_logits=z" : "");
    c.args = {random_arg(r, dtype::f32, {n_vocab, m, 1, 1}, -mag, mag), i32_arg({k, m, 1, 1}, ids),
              float_arg(dtype::f32, {k, m, 1, 1}, p), output_arg(dtype::f32, {m, 1, 1, 1})};
    if (!alias) c.args.push_back(output_arg(dtype::f32, {n_vocab, m, 1, 1}));
    const int dl = alias ? 0 : 4;
    c.outputs = {3, dl};
    // loss ~ log V + 2 mag (<= 170): a float logsumexp is ~1e-6 relative off, so 2e-6 * (log V + 2 mag). The
    // gradients are <= grad_scale in magnitude, off by ~1e-7. Without max subtraction |z| = 80 overflows (inf/NaN
    // fail); a missing grad_scale, P_m or target term is >= 1e-2 off; a masked row that is not zeroed is O(1).
    c.tol = {1e-10, 2e-6 * (std::log(double(n_vocab)) + 2.0 * mag) + 1e-6};
    c.run = [grad_scale, dl](backend& b, const std::vector<tensor>& a) {
        b.cross_entropy(a[0], a[1], a[2], grad_scale, a[3], a[dl]);
    };
    return c;
}

// ---- adamw ----

// Consecutive AdamW steps first_step .. first_step + n_steps - 1 on one parameter tensor (the same gradient each
// step). From step 1, m and v start at 0; later first steps get a plausible history (v >= 0).
op_case adamw_case(rng& r, int64_t n, int32_t first_step, int32_t n_steps, float weight_decay, float grad_scale) {
    op_case c;
    c.desc = "adamw_f32 N=" + std::to_string(n) + " steps=" + std::to_string(first_step) + ".." +
             std::to_string(first_step + n_steps - 1) + " wd=" + std::to_string(weight_decay) +
             " grad_scale=" + std::to_string(grad_scale);
    std::vector<float> g = random_floats(r, n);
    for (int64_t i = 0; i < n; i += 7) g[size_t(i)] = 0.f;  // zero gradients: the update is decay (and m) only
    if (n > 3) g[3] = 10.f;                                 // a large one: v dominates
    std::vector<float> v = random_floats(r, n, 0.f, first_step == 1 ? 0.f : 0.01f);
    c.args = {random_arg(r, dtype::f32, {n, 1, 1, 1}), float_arg(dtype::f32, {n, 1, 1, 1}, g),
              first_step == 1 ? float_arg(dtype::f32, {n, 1, 1, 1}, std::vector<float>(size_t(n), 0.f))
                              : random_arg(r, dtype::f32, {n, 1, 1, 1}, -0.1f, 0.1f),
              float_arg(dtype::f32, {n, 1, 1, 1}, v)};
    c.outputs = {0, 2, 3};
    // lr 1e-2: each step moves a parameter by ~1e-2 (decay: 1e-2 * wd * |param| ~ 5e-4). Every stored value is <= ~3
    // in magnitude (param <= 1.03, m <= 1.9 from the gradient of 10, v <= 0.3), so a float step is a few ulp of 3
    // (2.4e-7 each): 1e-6 absolute. A missing bias correction (x10 at step 1), weight decay or grad_scale changes
    // the update by >= 1e-4.
    c.tol = {1e-11, 1e-6};
    c.run = [=](backend& b, const std::vector<tensor>& a) {
        adamw_params p;
        p.lr = 1e-2f, p.weight_decay = weight_decay, p.grad_scale = grad_scale;
        for (int32_t s = first_step; s < first_step + n_steps; ++s) {
            p.step = s;
            b.adamw(a[0], a[1], a[2], a[3], p);
        }
    };
    return c;
}

}  // namespace

TEST_P(backend_ops, matmul_t_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul_t, dtype::f32);
    matmul_t_sweep(*this, dtype::f32);
}
TEST_P(backend_ops, matmul_t_f16_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul_t, dtype::f16);
    matmul_t_sweep(*this, dtype::f16);
}
TEST_P(backend_ops, matmul_t_q8_0_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul_t, dtype::q8_0);
    matmul_t_sweep(*this, dtype::q8_0);
}
TEST_P(backend_ops, matmul_t_q4_0_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul_t, dtype::q4_0);
    matmul_t_sweep(*this, dtype::q4_0);
}
TEST_P(backend_ops, matmul_t_q4_k_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul_t, dtype::q4_k);
    matmul_t_sweep(*this, dtype::q4_k);
}
TEST_P(backend_ops, matmul_t_q6_k_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul_t, dtype::q6_k);
    matmul_t_sweep(*this, dtype::q6_k);
}

TEST_P(backend_ops, weight_grad_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::weight_grad, dtype::f32);
    struct kmn_t {
        int64_t k, n, m;
    };
    for (kmn_t s : {kmn_t{1, 1, 1}, kmn_t{7, 5, 3}, kmn_t{33, 17, 1}, kmn_t{64, 96, 65}, kmn_t{288, 31, 129},
                    kmn_t{100, 3, 1000}}) {
        for (float beta : {0.f, 1.f}) {
            for (float alpha : {1.f, 0.37f}) check(weight_grad_case(random(), s.k, s.n, s.m, alpha, beta));
        }
    }
}

TEST_P(backend_ops, rms_norm_back_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::rms_norm_back, dtype::f32);
    for (int64_t k : {1, 5, 33, 768, 4097}) {
        for (int64_t m : {1, 3, 17}) {
            for (float mag : {1e-3f, 1.f, 100.f}) {
                for (bool alias : {false, true}) check(rms_norm_back_case(random(), k, m, mag, alias));
            }
        }
    }
}

TEST_P(backend_ops, swiglu_back_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::swiglu_back, dtype::f32);
    for (int64_t n : {1, 5, 17, 1000, 16896}) {
        for (float mag : {4.f, 100.f}) {  // 100: sigmoid saturates, exp(-g) overflows float for g < -88
            for (int alias : {0, 1, 2}) check(swiglu_back_case(random(), n, n > 1000 ? 1 : 3, mag, alias));
        }
    }
}

TEST_P(backend_ops, attention_back_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention_back, dtype::f32);
    // One causal chain (prefill of 13 after 4 committed), 5 spare slots nobody attends (dk, dv must be 0 there).
    for (auto [hq, hkv] : {std::pair<int64_t, int64_t>{2, 2}, {4, 1}, {4, 2}}) {
        for (int64_t d : {8, 64}) {
            runs chain;
            chain.chain(0, 4, 13);
            check(attention_back_case(random(), "chain", d, hq, hkv, 22, chain, 1.f));
            runs fresh;  // from an empty cache: row 0 sees only itself (P = 1, so dS = 0)
            fresh.chain(0, 0, 9);
            check(attention_back_case(random(), "chain", d, hq, hkv, 9, fresh, 3.f));
        }
    }
    // A ragged batch: three sequences of different lengths at different places of one buffer, with gaps.
    for (auto [hq, hkv] : {std::pair<int64_t, int64_t>{4, 4}, {4, 1}, {4, 2}}) {
        runs batch;
        batch.chain(0, 0, 7);    // slots 0..6
        batch.chain(10, 20, 5);  // slots 10..34
        batch.chain(40, 2, 11);  // slots 40..52
        batch.add(60, 0);        // an empty row: dq = 0
        check(attention_back_case(random(), "ragged", 16, hq, hkv, 60, batch, 2.f));
    }
    // Decode-like rows over a long run: kv_len 1100+ with D = 64 (a naive per-row loop exceeds 65,535 iterations on
    // lavapipe), and a sharp softmax.
    runs long_rows;
    long_rows.chain(0, 1100, 3);
    check(attention_back_case(random(), "long", 64, 4, 2, 1110, long_rows, 1.f));
    runs sharp;
    sharp.chain(0, 150, 6);
    check(attention_back_case(random(), "sharp", 64, 4, 4, 160, sharp, 8.f));
    // S >> M: most slots are never attended; and a training-sized chain of 64 rows.
    runs sparse;
    sparse.chain(300, 0, 5);
    check(attention_back_case(random(), "sparse", 32, 2, 1, 700, sparse, 1.f));
    runs train;
    train.chain(0, 0, 64);
    check(attention_back_case(random(), "chain", 64, 4, 2, 64, train, 1.f));
    // Runs that share slots from different starts: no training layout, but valid (a tiled kernel's general path).
    runs overlap;
    overlap.chain(0, 6, 5);  // slots 0..10
    overlap.chain(4, 2, 4);  // slots 4..9
    check(attention_back_case(random(), "overlap", 16, 4, 2, 12, overlap, 2.f));
}

TEST_P(backend_ops, get_rows_back_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::get_rows_back, dtype::f32);
    for (int64_t k : {1, 7, 64, 4097}) {
        for (int64_t n_rows : {1, 5, 300}) {
            for (int64_t m : {1, 4, 33, 200}) check(get_rows_back_case(random(), k, n_rows, m));
        }
    }
}

TEST_P(backend_ops, cross_entropy_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::cross_entropy, dtype::f32);
    for (int64_t v : {7, 512, 32000}) {
        for (int32_t k : {1, 8}) {
            if (k > v) continue;
            for (float mag : {1.f, 10.f, 80.f}) {
                const int64_t m = v > 1000 ? 4 : 7;
                check(cross_entropy_case(random(), v, m, k, mag, 1.f, false, false));
                check(cross_entropy_case(random(), v, m, k, mag, 0.25f, true, false));
                check(cross_entropy_case(random(), v, m, k, mag, 1.f / 3.f, true, true));
            }
        }
    }
    // One row of 4097 (not a multiple of any work-group size) with k = 64.
    check(cross_entropy_case(random(), 4097, 2, 64, 5.f, 1.f, false, false));
}

TEST_P(backend_ops, adamw_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::adamw, dtype::f32);
    for (int64_t n : {1, 7, 1000, 65537}) {
        for (float wd : {0.f, 0.1f}) {
            check(adamw_case(random(), n, 1, 3, wd, 1.f));    // steps 1, 2, 3 from zero moments
            check(adamw_case(random(), n, 10, 2, wd, 0.3f));  // steps 10, 11, with clipping / averaging
        }
    }
}

TEST_P(backend_ops, scale_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::scale, dtype::f32);
    for (int64_t n : {1, 5, 17, 1000, 16896}) {
        for (float s : {0.5f, -3.7f, 0.f}) {
            for (bool in_place : {false, true}) {
                op_case c;
                c.desc =
                    "scale_f32_f32 N=" + std::to_string(n) + " s=" + std::to_string(s) + (in_place ? " in-place" : "");
                c.args = {random_arg(random(), dtype::f32, {n, 1, 1, 1}, -3.f, 3.f)};
                if (!in_place) c.args.push_back(output_arg(dtype::f32, {n, 1, 1, 1}));
                const int out = in_place ? 0 : 1;
                c.outputs = {out};
                c.tol = {};  // one rounded product per element: bit-exact
                c.run = [s, out](backend& b, const std::vector<tensor>& a) { b.scale(a[0], s, a[out]); };
                check(c);
            }
        }
    }
}

TEST_P(backend_ops, sum_sq_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::sum_sq, dtype::f32);
    for (ne4 ne : {ne4{1, 1, 1, 1}, ne4{7, 1, 1, 1}, ne4{1000, 1, 1, 1}, ne4{33, 31, 1, 1}, ne4{4097, 3, 1, 1},
                   ne4{1 << 20, 1, 1, 1}, ne4{1024, 1024, 1, 1}}) {
        const int64_t n = ne[0] * ne[1] * ne[2] * ne[3];
        op_case c;
        c.desc = "sum_sq_f32_f32 x=" + shape_str(ne);
        c.args = {random_arg(random(), dtype::f32, ne), output_arg(dtype::f32, {1, 1, 1, 1})};
        c.outputs = {1};
        // The sum is ~n/3. A blocked or tree float sum is ~1e-6 relative off; a sequential float sum over 2^20 terms
        // up to ~6e-5 (n * eps in the worst case, sqrt(n) * eps typically): 1e-5 relative. One lost element is
        // 1e-3 relative at n = 1000, one lost block of 256 ~2.4e-4 relative at n = 2^20.
        c.tol = {1e-10, 1e-5 * double(n) / 3.0 + 1e-7};
        c.run = [](backend& b, const std::vector<tensor>& a) { b.sum_sq(a[0], a[1]); };
        check(c);
    }
}

// The backward of rope: rope at negative positions (the inverse rotation), as training calls it.
TEST_P(backend_ops, rope_f32_f32_negative_pos) {
    TANDEM_SKIP_UNSUPPORTED(op::rope, dtype::f32);
    for (int64_t d : {8, 64}) {
        for (int64_t m : {1, 7, 64}) {
            std::vector<int32_t> pos(static_cast<size_t>(m));
            for (auto& p : pos) p = -int32_t(random().integer(0, 4096));
            pos[0] = -4096;
            op_case c;
            c.desc = "rope_f32_f32 negative positions D=" + std::to_string(d) + " M=" + std::to_string(m);
            c.args = {random_arg(random(), dtype::f32, {d, 3, m, 1}), i32_arg({m, 1, 1, 1}, pos)};
            c.outputs = {0};
            c.tol = {1e-8, 2e-3};  // as rope_f32_f32: angles up to 4096 rad carry ~2.4e-4 rad of float rounding
            rope_params p;
            p.n_rot = int32_t(d);
            c.run = [p](backend& b, const std::vector<tensor>& a) { b.rope(a[0], a[1], p); };
            check(c);
        }
    }
}

// ---- bad arguments (every backend, cpu_ref included) ----

namespace {

op_case attention_back_bad(const std::vector<int32_t>& meta, const char* what) {
    const int64_t m = int64_t(meta.size() / 4), d = 8, n_slots = 6;
    op_case c;
    c.desc = std::string("attention_back with ") + what;
    c.args = {output_arg(dtype::f32, {d, 2, m, 1}),       output_arg(dtype::f32, {d, n_slots, 1, 1}),
              output_arg(dtype::f32, {d, n_slots, 1, 1}), i32_arg({4, m, 1, 1}, meta),
              output_arg(dtype::f32, {d, 2, m, 1}),       output_arg(dtype::f32, {d, 2, m, 1}),
              output_arg(dtype::f32, {d, 2, m, 1}),       output_arg(dtype::f32, {d, n_slots, 1, 1}),
              output_arg(dtype::f32, {d, n_slots, 1, 1})};
    c.run = [](backend& b, const std::vector<tensor>& a) {
        b.attention_back(a[0], a[1], a[2], a[3], a[4], a[5], attention_params{}, a[6], a[7], a[8]);
    };
    return c;
}

}  // namespace

TEST_P(backend_errors, training_ops) {
    // A tree walk has no backward pass (backend.h): an error, not a silent forward-only result.
    check_throws(attention_back_bad({0, 2, -1, -1, 0, 2, 1, 0}, "a tree row (tree = 1)"));
    check_throws(attention_back_bad({0, 2, -1, -1, 3, 4, -1, -1}, "a run past the end of 6 slots"));
    // Ids outside the table / vocabulary.
    {
        op_case c;
        c.desc = "get_rows_back with an id outside a table of 5 rows";
        c.args = {output_arg(dtype::f32, {8, 2, 1, 1}), i32_arg({2, 1, 1, 1}, {1, 5}),
                  output_arg(dtype::f32, {8, 5, 1, 1})};
        c.run = [](backend& b, const std::vector<tensor>& a) { b.get_rows_back(a[0], a[1], a[2]); };
        check_throws(c);
    }
    for (int32_t bad : {-1, 16}) {
        op_case c;
        c.desc = "cross_entropy with target id " + std::to_string(bad) + " outside a vocabulary of 16";
        c.args = {output_arg(dtype::f32, {16, 2, 1, 1}), i32_arg({1, 2, 1, 1}, {3, bad}),
                  float_arg(dtype::f32, {1, 2, 1, 1}, {1.f, 1.f}), output_arg(dtype::f32, {2, 1, 1, 1}),
                  output_arg(dtype::f32, {16, 2, 1, 1})};
        c.run = [](backend& b, const std::vector<tensor>& a) { b.cross_entropy(a[0], a[1], a[2], 1.f, a[3], a[4]); };
        check_throws(c);
    }
    // Shape contracts.
    {
        op_case c;
        c.desc = "matmul_t with dy rows that do not match w's N";
        c.args = {output_arg(dtype::f32, {8, 4, 1, 1}), output_arg(dtype::f32, {5, 2, 1, 1}),
                  output_arg(dtype::f32, {8, 2, 1, 1})};
        c.run = [](backend& b, const std::vector<tensor>& a) { b.matmul_t(a[0], a[1], a[2]); };
        check_throws(c);
    }
    {
        op_case c;
        c.desc = "weight_grad with beta = 0.5";
        c.args = {output_arg(dtype::f32, {4, 2, 1, 1}), output_arg(dtype::f32, {8, 2, 1, 1}),
                  output_arg(dtype::f32, {8, 4, 1, 1})};
        c.run = [](backend& b, const std::vector<tensor>& a) { b.weight_grad(a[0], a[1], 1.f, 0.5f, a[2]); };
        check_throws(c);
    }
    {
        op_case c;
        c.desc = "sum_sq into an output of 2 elements";
        c.args = {output_arg(dtype::f32, {8, 1, 1, 1}), output_arg(dtype::f32, {2, 1, 1, 1})};
        c.run = [](backend& b, const std::vector<tensor>& a) { b.sum_sq(a[0], a[1]); };
        check_throws(c);
    }
    {
        op_case c;
        c.desc = "adamw at step 0";
        for (int i = 0; i < 4; ++i) c.args.push_back(output_arg(dtype::f32, {8, 1, 1, 1}));
        c.run = [](backend& b, const std::vector<tensor>& a) {
            adamw_params p;
            p.step = 0;
            b.adamw(a[0], a[1], a[2], a[3], p);
        };
        check_throws(c);
    }
}

}  // namespace tandem::test
