// cpu_ref's backward ops against finite differences. Each forward op is written here again in double precision
// (and checked against cpu_ref's own forward op, so it is the same function); the loss is L = sum(y * R) for a
// random R, so dL/dinput is the op's backward with dy = R, and central differences of L in double give it to
// ~1e-9. The backward results are float (from double accumulation): they must agree to a relative L2 error of
// 1e-5, while a wrong formula (a dropped term, a wrong scale, a sign) is off by 1e-3 or more; negative controls
// check that the comparison does reject such errors. Also: AdamW against the scalar formula for three steps.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/dequant.h"
#include "engine/error.h"
#include "engine/quantize.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

using vec = std::vector<double>;
using ne4 = std::array<int64_t, 4>;

// A relative L2 error this small means the analytic gradient is right: float outputs carry ~1e-7, the central
// differences ~1e-9 (h = 1e-4 on functions with O(1..10) third derivatives).
constexpr double grad_tol = 1e-5;

// Seeded inputs that are exactly representable as float (the backend sees the same numbers as the double forward).
vec random_vec(std::mt19937_64& g, int64_t n, double lo = -1, double hi = 1) {
    std::uniform_real_distribution<float> u{float(lo), float(hi)};
    vec v(static_cast<size_t>(n));
    for (auto& x : v) x = u(g);
    return v;
}

double dot(const vec& a, const vec& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

// ||got - want|| / ||want||.
double rel_error(const vec& got, const vec& want) {
    double e = 0, n = 0;
    for (size_t i = 0; i < want.size(); ++i) e += (got[i] - want[i]) * (got[i] - want[i]), n += want[i] * want[i];
    return std::sqrt(e / std::max(n, 1e-300));
}

// dL/dx by central differences, perturbing x in place (restored afterwards).
vec numeric_grad(vec& x, const std::function<double()>& loss, double h = 1e-4) {
    vec g(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        const double old = x[i];
        x[i] = old + h;
        const double up = loss();
        x[i] = old - h;
        const double down = loss();
        x[i] = old;
        g[i] = (up - down) / (2 * h);
    }
    return g;
}

// Tensors in cpu_ref's host memory, from and back to double vectors.
class host_tensors {
 public:
    explicit host_tensors(backend& b) : b_(b) {}
    tensor f32(ne4 ne, const vec& v) {
        tensor t = make(dtype::f32, ne);
        for (size_t i = 0; i < v.size(); ++i) t.host<float>()[i] = float(v[i]);
        return t;
    }
    tensor f32(ne4 ne) {
        tensor t = make(dtype::f32, ne);
        for (int64_t i = 0; i < t.nelements(); ++i) t.host<float>()[i] = std::numeric_limits<float>::quiet_NaN();
        return t;
    }
    tensor i32(ne4 ne, const std::vector<int32_t>& v) {
        tensor t = make(dtype::i32, ne);
        std::copy(v.begin(), v.end(), t.host<int32_t>());
        return t;
    }
    tensor raw(dtype type, ne4 ne, const std::vector<uint8_t>& bytes) {
        tensor t = make(type, ne);
        std::copy(bytes.begin(), bytes.end(), t.host<uint8_t>());
        return t;
    }
    static vec get(const tensor& t) {
        vec v(static_cast<size_t>(t.nelements()));
        for (size_t i = 0; i < v.size(); ++i) v[i] = t.host<const float>()[i];
        return v;
    }

 private:
    tensor make(dtype type, ne4 ne) {
        tensor t;
        t.type = type, t.ne = ne;
        bufs_.push_back(b_.alloc(t.nbytes()));
        t.buf = bufs_.back().get();
        return t;
    }
    backend& b_;
    std::vector<std::unique_ptr<buffer>> bufs_;
};

class train_grad : public ::testing::Test {
 protected:
    void SetUp() override { ref_ = make_backend("cpu_ref"); }
    std::unique_ptr<backend> ref_;
    std::mt19937_64 gen_{test::test_seed()};
};

// ---- the forward ops in double ----

vec rms_norm_d(const vec& x, const vec& w, double eps, int64_t k) {
    vec y(x.size());
    for (size_t m = 0; m < x.size() / size_t(k); ++m) {
        double ss = 0;
        for (int64_t i = 0; i < k; ++i) ss += x[m * k + i] * x[m * k + i];
        const double r = 1 / std::sqrt(ss / double(k) + eps);
        for (int64_t i = 0; i < k; ++i) y[m * k + i] = x[m * k + i] * r * w[size_t(i)];
    }
    return y;
}

// w {K, N} (row n = w[n * K ..]), x {K, M} -> {N, M}.
vec matmul_d(const vec& w, const vec& x, int64_t k, int64_t n) {
    const int64_t m_rows = int64_t(x.size()) / k;
    vec y(size_t(n * m_rows), 0.0);
    for (int64_t m = 0; m < m_rows; ++m)
        for (int64_t j = 0; j < n; ++j)
            for (int64_t i = 0; i < k; ++i) y[size_t(m * n + j)] += w[size_t(j * k + i)] * x[size_t(m * k + i)];
    return y;
}

vec swiglu_d(const vec& g, const vec& u) {
    vec y(g.size());
    for (size_t i = 0; i < g.size(); ++i) y[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    return y;
}

struct attn_shape {
    int64_t d, hq, hkv, m, s;
};

// Contiguous runs only (meta rows {kv_begin, kv_len, -1, -1}).
vec attention_d(const vec& q, const vec& k, const vec& v, const std::vector<int32_t>& meta, const attn_shape& a,
                double scale) {
    vec out(q.size(), 0.0);
    const int64_t row = a.d * a.hkv, group = a.hq / a.hkv;
    for (int64_t m = 0; m < a.m; ++m) {
        const int64_t begin = meta[size_t(4 * m)], len = meta[size_t(4 * m + 1)];
        for (int64_t h = 0; h < a.hq; ++h) {
            const int64_t off = (m * a.hq + h) * a.d, kvo = h / group * a.d;
            vec sc(static_cast<size_t>(len));
            double best = -1e300, sum = 0;
            for (int64_t j = 0; j < len; ++j) {
                double s = 0;
                for (int64_t i = 0; i < a.d; ++i) s += q[size_t(off + i)] * k[size_t((begin + j) * row + kvo + i)];
                sc[size_t(j)] = s * scale, best = std::max(best, sc[size_t(j)]);
            }
            for (auto& s : sc) sum += (s = std::exp(s - best));
            for (int64_t j = 0; j < len; ++j)
                for (int64_t i = 0; i < a.d; ++i)
                    out[size_t(off + i)] += sc[size_t(j)] / sum * v[size_t((begin + j) * row + kvo + i)];
        }
    }
    return out;
}

vec rope_d(const vec& x, const std::vector<int32_t>& pos, int64_t d, int64_t h, int32_t n_rot, double base) {
    vec y = x;
    for (size_t m = 0; m < pos.size(); ++m) {
        for (int64_t head = 0; head < h; ++head) {
            const size_t o = (m * size_t(h) + size_t(head)) * size_t(d);
            for (int32_t i = 0; i < n_rot; i += 2) {
                // cpu_ref computes the frequency in float; so do we, so that angles match to float rounding.
                const double theta = double(pos[m]) * double(1.f / std::pow(float(base), float(i) / float(n_rot)));
                const double c = std::cos(theta), s = std::sin(theta);
                y[o + i] = x[o + i] * c - x[o + i + 1] * s;
                y[o + i + 1] = x[o + i] * s + x[o + i + 1] * c;
            }
        }
    }
    return y;
}

// sum over rows of sum_j p_j * (logsumexp(z) - z[id_j]).
double cross_entropy_d(const vec& z, const std::vector<int32_t>& ids, const vec& p, int64_t n_vocab, int64_t k) {
    double total = 0;
    for (size_t m = 0; m < z.size() / size_t(n_vocab); ++m) {
        double best = -1e300, sum = 0;
        for (int64_t i = 0; i < n_vocab; ++i) best = std::max(best, z[m * n_vocab + i]);
        for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(z[m * n_vocab + i] - best);
        const double lse = best + std::log(sum);
        for (int64_t j = 0; j < k; ++j) total += p[m * k + j] * (lse - z[m * n_vocab + ids[m * k + j]]);
    }
    return total;
}

void expect_close_forward(const vec& backend_out, const vec& double_out, const char* what) {
    EXPECT_LT(rel_error(backend_out, double_out), 1e-6) << what << ": the test's double forward is not cpu_ref's op";
}

// ---- the checks ----

TEST_F(train_grad, rms_norm_back) {
    const int64_t k = 13, m = 3;
    const double eps = 1e-5;
    vec x = random_vec(gen_, k * m, -2, 2), w = random_vec(gen_, k, -1.5, 1.5), r = random_vec(gen_, k * m);
    host_tensors t(*ref_);
    const tensor tx = t.f32({k, m, 1, 1}, x), tw = t.f32({k, 1, 1, 1}, w), ty = t.f32({k, m, 1, 1});
    ref_->rms_norm(tx, tw, float(eps), ty);
    expect_close_forward(host_tensors::get(ty), rms_norm_d(x, w, eps, k), "rms_norm");

    const vec fd = numeric_grad(x, [&] { return dot(rms_norm_d(x, w, eps, k), r); });
    const tensor tdx = t.f32({k, m, 1, 1});
    ref_->rms_norm_back(tx, tw, t.f32({k, m, 1, 1}, r), float(eps), tdx);
    const vec got = host_tensors::get(tdx);
    EXPECT_LT(rel_error(got, fd), grad_tol);

    // Negative control: only the first term r * w * dy (the normaliser treated as a constant) must be rejected.
    vec wrong(got.size());
    for (int64_t row = 0; row < m; ++row) {
        double ss = 0;
        for (int64_t i = 0; i < k; ++i) ss += x[size_t(row * k + i)] * x[size_t(row * k + i)];
        const double rr = 1 / std::sqrt(ss / double(k) + eps);
        for (int64_t i = 0; i < k; ++i) wrong[size_t(row * k + i)] = rr * w[size_t(i)] * r[size_t(row * k + i)];
    }
    EXPECT_GT(rel_error(wrong, fd), 100 * grad_tol) << "the check cannot tell a dropped term";
}

TEST_F(train_grad, matmul_t_and_weight_grad) {
    const int64_t k = 64, n = 5, m = 3;  // K = two Q8_0 blocks
    for (dtype type : {dtype::f32, dtype::q8_0}) {
        vec wv = random_vec(gen_, k * n), x = random_vec(gen_, k * m), r = random_vec(gen_, n * m);
        host_tensors t(*ref_);
        tensor tw;
        if (type == dtype::f32) {
            tw = t.f32({k, n, 1, 1}, wv);
        } else {
            // The gradient flows through the dequantized weight: use those values in the double forward.
            std::vector<float> wf(wv.begin(), wv.end()), deq(wf.size());
            std::vector<uint8_t> bytes(dtype_row_bytes(type, k) * size_t(n));
            for (int64_t j = 0; j < n; ++j) {
                quantize_row(type, wf.data() + j * k, bytes.data() + size_t(j) * dtype_row_bytes(type, k), k);
                dequantize_row(type, bytes.data() + size_t(j) * dtype_row_bytes(type, k), deq.data() + j * k, k);
            }
            wv.assign(deq.begin(), deq.end());
            tw = t.raw(type, {k, n, 1, 1}, bytes);
        }
        const tensor tx = t.f32({k, m, 1, 1}, x), ty = t.f32({n, m, 1, 1});
        ref_->matmul(tw, tx, ty);
        expect_close_forward(host_tensors::get(ty), matmul_d(wv, x, k, n), "matmul");

        const vec fdx = numeric_grad(x, [&] { return dot(matmul_d(wv, x, k, n), r); });
        const tensor tr = t.f32({n, m, 1, 1}, r), tdx = t.f32({k, m, 1, 1});
        ref_->matmul_t(tw, tr, tdx);
        EXPECT_LT(rel_error(host_tensors::get(tdx), fdx), grad_tol) << dtype_name(type);

        if (type != dtype::f32) continue;  // weight_grad is for the f32 adapter weights
        const vec fdw = numeric_grad(wv, [&] { return dot(matmul_d(wv, x, k, n), r); });
        const tensor tdw = t.f32({k, n, 1, 1});  // NaN: beta = 0 must ignore it
        ref_->weight_grad(tr, tx, 1.f, 0.f, tdw);
        const vec dw = host_tensors::get(tdw);
        EXPECT_LT(rel_error(dw, fdw), grad_tol);
        // alpha and beta: dw = 1 * dw + 0.5 * grad, i.e. 1.5 * grad.
        ref_->weight_grad(tr, tx, 0.5f, 1.f, tdw);
        vec expect = fdw;
        for (auto& e : expect) e *= 1.5;
        EXPECT_LT(rel_error(host_tensors::get(tdw), expect), grad_tol);
        // Negative control: dx 1% off (a wrong scale) must be rejected.
        vec wrong = host_tensors::get(tdx);
        for (auto& e : wrong) e *= 1.01;
        EXPECT_GT(rel_error(wrong, fdx), 100 * grad_tol);
    }
}

TEST_F(train_grad, swiglu_back) {
    const int64_t n = 40;
    vec g = random_vec(gen_, n, -6, 6), u = random_vec(gen_, n, -2, 2), r = random_vec(gen_, n);
    host_tensors t(*ref_);
    const tensor tg = t.f32({n, 1, 1, 1}, g), tu = t.f32({n, 1, 1, 1}, u), ty = t.f32({n, 1, 1, 1});
    ref_->swiglu(tg, tu, ty);
    expect_close_forward(host_tensors::get(ty), swiglu_d(g, u), "swiglu");
    const vec fdg = numeric_grad(g, [&] { return dot(swiglu_d(g, u), r); });
    const vec fdu = numeric_grad(u, [&] { return dot(swiglu_d(g, u), r); });
    const tensor tdg = t.f32({n, 1, 1, 1}), tdu = t.f32({n, 1, 1, 1});
    ref_->swiglu_back(tg, tu, t.f32({n, 1, 1, 1}, r), tdg, tdu);
    EXPECT_LT(rel_error(host_tensors::get(tdg), fdg), grad_tol);
    EXPECT_LT(rel_error(host_tensors::get(tdu), fdu), grad_tol);
    // Negative control: d_gate = dy * u * s (the derivative of g * s without its g * s * (1 - s) part).
    vec wrong(g.size());
    for (size_t i = 0; i < g.size(); ++i) wrong[i] = r[i] * u[i] / (1 + std::exp(-g[i]));
    EXPECT_GT(rel_error(wrong, fdg), 100 * grad_tol);
}

TEST_F(train_grad, attention_back) {
    // Grouped-query heads (4 over 2), a ragged batch: a causal chain of 4 after 2 committed at slots [0, 6), an
    // empty row, and a chain of 3 from an empty cache at slots [8, 11); slots 6, 7 and 11 are never attended.
    const attn_shape a{6, 4, 2, 8, 12};
    const std::vector<int32_t> meta = {0, 3, -1, -1, 0, 4, -1, -1, 0, 5, -1, -1, 0, 6, -1, -1,
                                       6, 0, -1, -1, 8, 1, -1, -1, 8, 2, -1, -1, 8, 3, -1, -1};
    const double scale = 1 / std::sqrt(double(a.d));
    vec q = random_vec(gen_, a.d * a.hq * a.m, -2, 2), k = random_vec(gen_, a.d * a.hkv * a.s),
        v = random_vec(gen_, a.d * a.hkv * a.s), r = random_vec(gen_, a.d * a.hq * a.m);
    host_tensors t(*ref_);
    const ne4 qne{a.d, a.hq, a.m, 1}, kne{a.d * a.hkv, a.s, 1, 1};
    const tensor tq = t.f32(qne, q), tk = t.f32(kne, k), tv = t.f32(kne, v), tm = t.i32({4, a.m, 1, 1}, meta);
    const tensor tout = t.f32(qne);
    attention_params p;
    p.scale = float(scale);
    ref_->attention(tq, tk, tv, tm, t.i32({a.m, 1, 1, 1}, std::vector<int32_t>(size_t(a.m), 0)), p, tout);
    expect_close_forward(host_tensors::get(tout), attention_d(q, k, v, meta, a, scale), "attention");

    auto loss = [&] { return dot(attention_d(q, k, v, meta, a, scale), r); };
    const vec fdq = numeric_grad(q, loss), fdk = numeric_grad(k, loss), fdv = numeric_grad(v, loss);
    const tensor tdq = t.f32(qne), tdk = t.f32(kne), tdv = t.f32(kne);
    ref_->attention_back(tq, tk, tv, tm, tout, t.f32(qne, r), p, tdq, tdk, tdv);
    const vec dq = host_tensors::get(tdq), dk = host_tensors::get(tdk), dv = host_tensors::get(tdv);
    EXPECT_LT(rel_error(dq, fdq), grad_tol);
    EXPECT_LT(rel_error(dk, fdk), grad_tol);
    EXPECT_LT(rel_error(dv, fdv), grad_tol);
    for (int64_t slot : {6, 7, 11})
        for (int64_t i = 0; i < a.d * a.hkv; ++i) {
            EXPECT_EQ(dk[size_t(slot * a.d * a.hkv + i)], 0.0) << "slot " << slot;
            EXPECT_EQ(dv[size_t(slot * a.d * a.hkv + i)], 0.0) << "slot " << slot;
        }
    // Negative control: dq 2% too large (a wrong scale) must be rejected.
    vec wrong = dq;
    for (auto& x : wrong) x *= 1.02;
    EXPECT_GT(rel_error(wrong, fdq), 100 * grad_tol);
}

TEST_F(train_grad, get_rows_back) {
    const int64_t k = 5, n_rows = 4;
    const std::vector<int32_t> ids = {2, 0, 2, 3, 2};  // row 1 never read: its gradient stays as it was
    vec table = random_vec(gen_, k * n_rows), r = random_vec(gen_, k * int64_t(ids.size()));
    auto gather = [&] {
        vec y;
        for (int32_t id : ids) y.insert(y.end(), table.begin() + id * k, table.begin() + (id + 1) * k);
        return y;
    };
    const vec fd = numeric_grad(table, [&] { return dot(gather(), r); });
    host_tensors t(*ref_);
    const tensor td = t.f32({k, n_rows, 1, 1}, vec(size_t(k * n_rows), 0.0));
    ref_->get_rows_back(t.f32({k, int64_t(ids.size()), 1, 1}, r), t.i32({int64_t(ids.size()), 1, 1, 1}, ids), td);
    EXPECT_LT(rel_error(host_tensors::get(td), fd), grad_tol);
}

TEST_F(train_grad, rope_backward_is_rope_at_negated_positions) {
    const int64_t d = 8, h = 2;
    const int32_t n_rot = 6;  // two dimensions pass through
    const std::vector<int32_t> pos = {0, 3, 17, 250};
    const int64_t m = int64_t(pos.size());
    vec x = random_vec(gen_, d * h * m), r = random_vec(gen_, d * h * m);
    host_tensors t(*ref_);
    rope_params p;
    p.n_rot = n_rot;
    const tensor tx = t.f32({d, h, m, 1}, x);
    ref_->rope(tx, t.i32({m, 1, 1, 1}, pos), p);
    // Angles up to 250 rad: cos/sin of float-rounded frequencies agree to ~1e-5.
    EXPECT_LT(rel_error(host_tensors::get(tx), rope_d(x, pos, d, h, n_rot, p.freq_base)), 1e-5);

    const vec fd = numeric_grad(x, [&] { return dot(rope_d(x, pos, d, h, n_rot, p.freq_base), r); });
    std::vector<int32_t> neg(pos.size()), same = pos;
    for (size_t i = 0; i < pos.size(); ++i) neg[i] = -pos[i];
    const tensor tr = t.f32({d, h, m, 1}, r);
    ref_->rope(tr, t.i32({m, 1, 1, 1}, neg), p);
    EXPECT_LT(rel_error(host_tensors::get(tr), fd), grad_tol);
    // Negative control: rotating the gradient forward (positions not negated) must be rejected.
    const tensor tw = t.f32({d, h, m, 1}, r);
    ref_->rope(tw, t.i32({m, 1, 1, 1}, same), p);
    EXPECT_GT(rel_error(host_tensors::get(tw), fd), 100 * grad_tol);
}

TEST_F(train_grad, cross_entropy) {
    const int64_t n_vocab = 11, m = 4, k = 3;
    // Row 0: a teacher's top-3 (mass 0.9); row 1: a hard label padded with zero-probability entries; row 2: masked;
    // row 3: top-3 with a repeated id.
    const std::vector<int32_t> ids = {4, 0, 10, 7, 1, 2, 3, 3, 3, 5, 9, 5};
    const vec p = {0.5, 0.3, 0.1, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.25};
    vec z = random_vec(gen_, n_vocab * m, -4, 4);
    const float grad_scale = 0.5f;
    const vec fd = numeric_grad(z, [&] { return grad_scale * cross_entropy_d(z, ids, p, n_vocab, k); });
    host_tensors t(*ref_);
    const tensor tz = t.f32({n_vocab, m, 1, 1}, z), tloss = t.f32({m, 1, 1, 1}), td = t.f32({n_vocab, m, 1, 1});
    ref_->cross_entropy(tz, t.i32({k, m, 1, 1}, ids), t.f32({k, m, 1, 1}, p), grad_scale, tloss, td);
    const vec d = host_tensors::get(td), loss = host_tensors::get(tloss);
    EXPECT_LT(rel_error(d, fd), grad_tol);
    double total = 0;
    for (double l : loss) total += l;
    EXPECT_NEAR(total, cross_entropy_d(z, ids, p, n_vocab, k), 1e-5);
    EXPECT_EQ(loss[2], 0.0);
    for (int64_t i = 0; i < n_vocab; ++i) EXPECT_EQ(d[size_t(2 * n_vocab + i)], 0.0) << "masked row, column " << i;
    // Negative control: the gradient without the P_m factor (softmax - target, as if every row's mass were 1).
    vec wrong = d;
    for (int64_t i = 0; i < n_vocab; ++i) {
        double best = -1e300, sum = 0;
        for (int64_t j = 0; j < n_vocab; ++j) best = std::max(best, z[size_t(j)]);
        for (int64_t j = 0; j < n_vocab; ++j) sum += std::exp(z[size_t(j)] - best);
        wrong[size_t(i)] += grad_scale * 0.1 * std::exp(z[size_t(i)] - best) / sum;  // row 0: P = 0.9, not 1
    }
    EXPECT_GT(rel_error(wrong, fd), 100 * grad_tol);
}

TEST_F(train_grad, adamw_three_steps_match_the_scalar_formula) {
    const int64_t n = 9;
    vec param = random_vec(gen_, n), grad = random_vec(gen_, n, -3, 3);
    grad[0] = 0;
    host_tensors t(*ref_);
    const tensor tp = t.f32({n, 1, 1, 1}, param), tg = t.f32({n, 1, 1, 1}, grad);
    const tensor tm = t.f32({n, 1, 1, 1}, vec(size_t(n), 0.0)), tv = t.f32({n, 1, 1, 1}, vec(size_t(n), 0.0));
    adamw_params ap;
    ap.lr = 0.01f, ap.weight_decay = 0.1f, ap.grad_scale = 0.7f;
    vec m(size_t(n), 0.0), v(size_t(n), 0.0);
    for (int32_t step = 1; step <= 3; ++step) {
        ap.step = step;
        ref_->adamw(tp, tg, tm, tv, ap);
        const double b1 = ap.beta1, b2 = ap.beta2, lr = ap.lr;
        for (int64_t i = 0; i < n; ++i) {
            const double g = grad[size_t(i)] * double(ap.grad_scale);
            param[size_t(i)] *= 1 - lr * double(ap.weight_decay);
            m[size_t(i)] = b1 * m[size_t(i)] + (1 - b1) * g;
            v[size_t(i)] = b2 * v[size_t(i)] + (1 - b2) * g * g;
            const double mhat = m[size_t(i)] / (1 - std::pow(b1, step)), vhat = v[size_t(i)] / (1 - std::pow(b2, step));
            param[size_t(i)] -= lr * mhat / (std::sqrt(vhat) + double(ap.eps));
        }
        const vec gp = host_tensors::get(tp), gm = host_tensors::get(tm), gv = host_tensors::get(tv);
        for (int64_t i = 0; i < n; ++i) {
            // Float state, one rounding per stored value per step: 1e-6 is ~10 ulp of |param| <= 1.1.
            EXPECT_NEAR(gp[size_t(i)], param[size_t(i)], 1e-6) << "step " << step << " element " << i;
            EXPECT_NEAR(gm[size_t(i)], m[size_t(i)], 1e-6 * std::abs(m[size_t(i)]) + 1e-12);
            EXPECT_NEAR(gv[size_t(i)], v[size_t(i)], 1e-6 * v[size_t(i)] + 1e-15);
        }
    }
}

TEST_F(train_grad, scale_and_sum_sq) {
    const int64_t n = 1001;
    const vec x = random_vec(gen_, n, -2, 2);
    host_tensors t(*ref_);
    const tensor tx = t.f32({n, 1, 1, 1}, x), ts = t.f32({1, 1, 1, 1}), ty = t.f32({n, 1, 1, 1});
    ref_->sum_sq(tx, ts);
    EXPECT_NEAR(host_tensors::get(ts)[0], dot(x, x), 1e-6 * dot(x, x));
    ref_->scale(tx, -0.25f, ty);
    const vec y = host_tensors::get(ty);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(y[size_t(i)], double(float(-0.25 * x[size_t(i)])));
}

TEST_F(train_grad, attention_back_rejects_tree_rows) {
    host_tensors t(*ref_);
    const ne4 qne{4, 1, 2, 1}, kne{4, 3, 1, 1};
    const tensor tq = t.f32(qne, vec(8, 0.5)), tk = t.f32(kne, vec(12, 0.5)), tv = t.f32(kne, vec(12, 0.5));
    const tensor meta = t.i32({4, 2, 1, 1}, {0, 1, -1, -1, 0, 1, 1, 0});
    EXPECT_THROW(ref_->attention_back(tq, tk, tv, meta, t.f32(qne, vec(8, 0.0)), t.f32(qne, vec(8, 1.0)),
                                      attention_params{}, t.f32(qne), t.f32(kne), t.f32(kne)),
                 error);
}

}  // namespace
}  // namespace tandem
