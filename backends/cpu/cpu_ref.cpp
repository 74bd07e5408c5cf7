// cpu_ref: the readable reference implementation of every op in backends/backend.h. The training ops
// accumulate in double (they are the oracle for float kernels and for the finite-difference checks).
#include "backends/cpu/cpu_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "backends/cpu/dequant.h"
#include "backends/cpu/host_buffer.h"
#include "backends/op_checks.h"
#include "engine/error.h"

namespace tandem {

namespace {

// Stores one f32 row into a row of type t (the KV cache may be f16).
void store_row(dtype t, const float* src, void* dst, int64_t n) {
    if (t == dtype::f32) {
        std::memcpy(dst, src, size_t(n) * 4);
    } else if (t == dtype::f16) {
        auto* h = static_cast<uint16_t*>(dst);
        for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(src[i]);
    } else {
        throw error(TANDEM_ERR_UNSUPPORTED, "cache type " + std::string(dtype_name(t)) + " is not supported");
    }
}

const char* row_ptr(const tensor& t, int64_t row) { return t.host<const char>() + size_t(row) * t.row_bytes(); }

class cpu_ref_backend final : public host_memory_backend {
   public:
    std::string name() const override { return "cpu_ref"; }

    bool supports(op o, dtype t) const override {
        switch (o) {
            case op::get_rows: case op::matmul: case op::matmul_t: return dequant_supported(t);
            case op::attention: case op::kv_write: case op::kv_copy: return t == dtype::f32 || t == dtype::f16;
            default: return t == dtype::f32;
        }
    }

    void get_rows(const tensor& table, const tensor& ids, const tensor& out) override {
        checks::get_rows(table, ids, out);
        const int64_t k = table.ne[0], n_rows = table.nrows();
        for (int64_t m = 0; m < ids.nelements(); ++m) {
            const int32_t id = ids.host<const int32_t>()[m];
            if (id < 0 || id >= n_rows) {
                throw error(TANDEM_ERR_INVALID_ARGUMENT,
                            "get_rows: id " + std::to_string(id) + " outside table of " + std::to_string(n_rows));
            }
            dequantize_row(table.type, row_ptr(table, id), out.host<float>() + m * k, k);
        }
    }

    void rms_norm(const tensor& x, const tensor& w, float eps, const tensor& out) override {
        checks::rms_norm(x, w, out);
        const int64_t k = x.ne[0];
        for (int64_t m = 0; m < x.nrows(); ++m) {
            const float* xr = x.host<const float>() + m * k;
            float ss = 0.f;
            for (int64_t i = 0; i < k; ++i) ss += xr[i] * xr[i];
            const float scale = 1.f / std::sqrt(ss / float(k) + eps);
            float* o = out.host<float>() + m * k;
            for (int64_t i = 0; i < k; ++i) o[i] = xr[i] * scale * w.host<const float>()[i];
        }
    }

    void matmul(const tensor& w, const tensor& x, const tensor& out) override {
        checks::matmul(w, x, out);
        const int64_t k = w.ne[0], n = w.nrows(), m_rows = x.nrows();
        std::vector<float> wrow(static_cast<size_t>(k));
        for (int64_t j = 0; j < n; ++j) {
            dequantize_row(w.type, row_ptr(w, j), wrow.data(), k);
            for (int64_t m = 0; m < m_rows; ++m) {
                const float* xr = x.host<const float>() + m * k;
                float acc = 0.f;
                for (int64_t i = 0; i < k; ++i) acc += wrow[i] * xr[i];
                out.host<float>()[m * n + j] = acc;
            }
        }
    }

    void rope(const tensor& x, const tensor& pos, const rope_params& p) override {
        checks::rope(x, pos, p);
        const int64_t d = x.ne[0], h = x.ne[1], m_rows = x.ne[2] * x.ne[3];
        for (int64_t m = 0; m < m_rows; ++m) {
            const float position = float(pos.host<const int32_t>()[m]);
            for (int64_t head = 0; head < h; ++head) {
                float* v = x.host<float>() + (m * h + head) * d;
                for (int64_t i = 0; i < p.n_rot; i += 2) {
                    const float theta = position * (1.f / std::pow(p.freq_base, float(i) / float(p.n_rot)));
                    const float c = std::cos(theta), s = std::sin(theta);
                    const float a = v[i], b = v[i + 1];
                    v[i] = a * c - b * s;
                    v[i + 1] = a * s + b * c;
                }
            }
        }
    }

    void attention(const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
                   const tensor& slots, const attention_params& p, const tensor& out) override {
        checks::attention(q, k_cache, v_cache, meta, slots, out);
        const int64_t d = q.ne[0], hq = q.ne[1], m_rows = q.ne[2];
        const int64_t hkv = k_cache.ne[0] / d, group = hq / hkv, n_slots = k_cache.nrows();
        const int32_t* mt = meta.host<const int32_t>();
        const int32_t* sl = slots.host<const int32_t>();
        std::vector<float> krow(size_t(k_cache.ne[0])), vrow(size_t(k_cache.ne[0]));
        for (int64_t m = 0; m < m_rows; ++m) {
            // The slots row m attends to: a contiguous run, then the walk up its tree ancestors.
            std::vector<int64_t> visible;
            for (int64_t s = 0; s < mt[m * 4 + 1]; ++s) visible.push_back(int64_t(mt[m * 4 + 0]) + s);
            int64_t steps = 0;
            const int64_t n_walk = meta.nrows();  // query rows, then walk-only entries
            for (int32_t j = mt[m * 4 + 2]; j >= 0; j = mt[j * 4 + 3]) {
                if (j >= n_walk || ++steps > n_walk) throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention: bad tree");
                visible.push_back(sl[j]);
            }
            for (int64_t head = 0; head < hq; ++head) {
                const float* qv = q.host<const float>() + (m * hq + head) * d;
                const int64_t kvh = head / group;
                // Plain two-pass softmax over the visible slots (the oracle; kernels use online softmax).
                std::vector<float> scores;
                float best = -std::numeric_limits<float>::infinity();
                for (int64_t s : visible) {
                    if (s < 0 || s >= n_slots) throw error(TANDEM_ERR_INVALID_ARGUMENT, "attention: slot out of range");
                    dequantize_row(k_cache.type, row_ptr(k_cache, s), krow.data(), k_cache.ne[0]);
                    float dot = 0.f;
                    for (int64_t i = 0; i < d; ++i) dot += qv[i] * krow[kvh * d + i];
                    scores.push_back(dot * p.scale);
                    best = std::max(best, scores.back());
                }
                float sum = 0.f;
                for (float& sc : scores) sum += (sc = std::exp(sc - best));
                float* o = out.host<float>() + (m * hq + head) * d;
                for (int64_t i = 0; i < d; ++i) o[i] = 0.f;
                for (size_t t = 0; t < visible.size(); ++t) {
                    dequantize_row(v_cache.type, row_ptr(v_cache, visible[t]), vrow.data(), v_cache.ne[0]);
                    const float wgt = scores[t] / sum;
                    for (int64_t i = 0; i < d; ++i) o[i] += wgt * vrow[kvh * d + i];
                }
            }
        }
    }

    void swiglu(const tensor& gate, const tensor& up, const tensor& out) override {
        checks::same_f32("swiglu", gate, up, out);
        for (int64_t i = 0; i < gate.nelements(); ++i) {
            const float g = gate.host<const float>()[i];
            out.host<float>()[i] = g / (1.f + std::exp(-g)) * up.host<const float>()[i];
        }
    }

    void add(const tensor& a, const tensor& b, const tensor& out) override {
        checks::same_f32("add", a, b, out);
        for (int64_t i = 0; i < a.nelements(); ++i) out.host<float>()[i] = a.host<const float>()[i] + b.host<const float>()[i];
    }

    void softmax(const tensor& x, const tensor& out) override {
        checks::softmax(x, out);
        const int64_t k = x.ne[0];
        for (int64_t m = 0; m < x.nrows(); ++m) {
            const float* xr = x.host<const float>() + m * k;
            float* o = out.host<float>() + m * k;
            float best = -std::numeric_limits<float>::infinity();
            for (int64_t i = 0; i < k; ++i) best = std::max(best, xr[i]);
            float sum = 0.f;
            for (int64_t i = 0; i < k; ++i) sum += (o[i] = std::exp(xr[i] - best));
            for (int64_t i = 0; i < k; ++i) o[i] /= sum;
        }
    }

    void kv_write(const tensor& src, const tensor& cache, const tensor& slots) override {
        checks::kv_write(src, cache, slots);
        for (int64_t m = 0; m < src.nrows(); ++m) {
            const int32_t s = slots.host<const int32_t>()[m];
            if (s < 0 || s >= cache.nrows()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "kv_write: slot out of range");
            store_row(cache.type, src.host<const float>() + m * src.ne[0],
                      const_cast<char*>(row_ptr(cache, s)), cache.ne[0]);
        }
    }

    void kv_copy(const tensor& cache, const tensor& src, const tensor& dst) override {
        checks::kv_copy(cache, src, dst);
        const size_t rb = cache.row_bytes();
        const int64_t n = src.nelements();
        std::vector<char> staged(rb * size_t(n));  // all reads before any write
        for (int64_t i = 0; i < n; ++i) {
            const int32_t s = src.host<const int32_t>()[i];
            if (s < 0 || s >= cache.nrows()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "kv_copy: src slot out of range");
            std::memcpy(staged.data() + rb * size_t(i), row_ptr(cache, s), rb);
        }
        for (int64_t i = 0; i < n; ++i) {
            const int32_t d = dst.host<const int32_t>()[i];
            if (d < 0 || d >= cache.nrows()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "kv_copy: dst slot out of range");
            std::memcpy(const_cast<char*>(row_ptr(cache, d)), staged.data() + rb * size_t(i), rb);
        }
    }

    void argmax(const tensor& x, const tensor& out) override {
        checks::argmax(x, out);
        const int64_t k = x.ne[0];
        for (int64_t m = 0; m < x.nrows(); ++m) {
            const float* xr = x.host<const float>() + m * k;
            int32_t best = 0;
            for (int64_t i = 1; i < k; ++i)
                if (xr[i] > xr[best]) best = int32_t(i);
            out.host<int32_t>()[m] = best;
        }
    }

    void top_k(const tensor& x, int32_t k, const tensor& out_ids, const tensor& out_vals) override {
        checks::top_k(x, k, out_ids, out_vals);
        const int64_t n = x.ne[0];
        std::vector<int32_t> order(static_cast<size_t>(n));
        for (int64_t m = 0; m < x.nrows(); ++m) {
            const float* xr = x.host<const float>() + m * n;
            std::iota(order.begin(), order.end(), 0);
            // The k first indices in the order (larger value first, then lower index).
            std::partial_sort(order.begin(), order.begin() + k, order.end(),
                              [&](int32_t a, int32_t b) { return xr[a] > xr[b] || (xr[a] == xr[b] && a < b); });
            for (int32_t j = 0; j < k; ++j) {
                out_ids.host<int32_t>()[m * k + j] = order[size_t(j)];
                out_vals.host<float>()[m * k + j] = xr[order[size_t(j)]];
            }
        }
    }

    // ---- training ----

    void matmul_t(const tensor& w, const tensor& dy, const tensor& dx) override {
        checks::matmul_t(w, dy, dx);
        const int64_t k = w.ne[0], n = w.nrows(), m_rows = dy.nrows();
        std::vector<float> wrow(static_cast<size_t>(k));
        std::vector<double> acc(size_t(k * m_rows), 0.0);
        for (int64_t j = 0; j < n; ++j) {
            dequantize_row(w.type, row_ptr(w, j), wrow.data(), k);
            for (int64_t m = 0; m < m_rows; ++m) {
                const double g = dy.host<const float>()[m * n + j];
                for (int64_t i = 0; i < k; ++i) acc[size_t(m * k + i)] += double(wrow[size_t(i)]) * g;
            }
        }
        for (int64_t i = 0; i < k * m_rows; ++i) dx.host<float>()[i] = float(acc[size_t(i)]);
    }

    void weight_grad(const tensor& dy, const tensor& x, float alpha, float beta, const tensor& dw) override {
        checks::weight_grad(dy, x, beta, dw);
        const int64_t k = x.ne[0], n = dy.ne[0], m_rows = x.nrows();
        for (int64_t j = 0; j < n; ++j) {
            for (int64_t i = 0; i < k; ++i) {
                double acc = 0.0;
                for (int64_t m = 0; m < m_rows; ++m)
                    acc += double(dy.host<const float>()[m * n + j]) * double(x.host<const float>()[m * k + i]);
                float& o = dw.host<float>()[j * k + i];
                // beta = 0 must not read dw: it may hold garbage, NaN included.
                o = float(double(alpha) * acc + (beta == 0.f ? 0.0 : double(o)));
            }
        }
    }

    void rms_norm_back(const tensor& x, const tensor& w, const tensor& dy, float eps, const tensor& dx) override {
        checks::rms_norm_back(x, w, dy, dx);
        const int64_t k = x.ne[0];
        const float* wp = w.host<const float>();
        for (int64_t m = 0; m < x.nrows(); ++m) {
            const float* xr = x.host<const float>() + m * k;
            const float* g = dy.host<const float>() + m * k;
            double ss = 0.0, wgx = 0.0;
            for (int64_t i = 0; i < k; ++i) ss += double(xr[i]) * xr[i], wgx += double(wp[i]) * g[i] * xr[i];
            const double r = 1.0 / std::sqrt(ss / double(k) + double(eps));
            const double c = r * r * r / double(k) * wgx;
            // Every dy of the row is read above, so dx may alias dy.
            float* o = dx.host<float>() + m * k;
            for (int64_t i = 0; i < k; ++i) o[i] = float(r * wp[i] * g[i] - xr[i] * c);
        }
    }

    void swiglu_back(const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate,
                     const tensor& d_up) override {
        checks::swiglu_back(gate, up, dy, d_gate, d_up);
        for (int64_t i = 0; i < gate.nelements(); ++i) {
            // All three inputs read before either output is written (outputs may alias them).
            const double g = gate.host<const float>()[i], u = up.host<const float>()[i], d = dy.host<const float>()[i];
            const double sg = 1.0 / (1.0 + std::exp(-g));
            d_gate.host<float>()[i] = float(d * u * sg * (1.0 + g * (1.0 - sg)));
            d_up.host<float>()[i] = float(d * g * sg);
        }
    }

    void attention_back(const tensor& q, const tensor& k, const tensor& v, const tensor& meta, const tensor& out,
                        const tensor& d_out, const attention_params& p, const tensor& dq, const tensor& dk,
                        const tensor& dv) override {
        checks::attention_back(q, k, v, meta, out, d_out, dq, dk, dv);
        const int64_t d = q.ne[0], hq = q.ne[1], m_rows = q.ne[2];
        const int64_t row = k.ne[0], hkv = row / d, group = hq / hkv, n_slots = k.nrows();
        const int32_t* mt = meta.host<const int32_t>();
        checks::attention_back_rows(mt, m_rows, n_slots);
        const float* kp = k.host<const float>();
        const float* vp = v.host<const float>();
        std::vector<double> dk_acc(size_t(row * n_slots), 0.0), dv_acc(size_t(row * n_slots), 0.0);
        std::vector<double> prob, dq_acc(static_cast<size_t>(d));
        for (int64_t m = 0; m < m_rows; ++m) {
            const int64_t begin = mt[4 * m], len = mt[4 * m + 1];
            for (int64_t h = 0; h < hq; ++h) {
                const int64_t off = (m * hq + h) * d, kvo = (h / group) * d;
                const float* qv = q.host<const float>() + off;
                const float* go = d_out.host<const float>() + off;
                const float* ov = out.host<const float>() + off;
                // The softmax row again, as the forward pass computed it.
                prob.assign(size_t(len), 0.0);
                double best = -std::numeric_limits<double>::infinity(), sum = 0.0;
                for (int64_t j = 0; j < len; ++j) {
                    const float* kr = kp + (begin + j) * row + kvo;
                    double dot = 0.0;
                    for (int64_t i = 0; i < d; ++i) dot += double(qv[i]) * kr[i];
                    prob[size_t(j)] = dot * double(p.scale);
                    best = std::max(best, prob[size_t(j)]);
                }
                for (double& x : prob) sum += (x = std::exp(x - best));
                for (double& x : prob) x /= sum;
                double delta = 0.0;  // d_out . out
                for (int64_t i = 0; i < d; ++i) delta += double(go[i]) * ov[i];
                std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
                for (int64_t j = 0; j < len; ++j) {
                    const int64_t s = begin + j;
                    const float* kr = kp + s * row + kvo;
                    const float* vr = vp + s * row + kvo;
                    double dp = 0.0;
                    for (int64_t i = 0; i < d; ++i) dp += double(go[i]) * vr[i];
                    const double pj = prob[size_t(j)], ds = pj * (dp - delta);
                    for (int64_t i = 0; i < d; ++i) {
                        dq_acc[size_t(i)] += double(p.scale) * ds * kr[i];
                        dk_acc[size_t(s * row + kvo + i)] += double(p.scale) * ds * qv[i];
                        dv_acc[size_t(s * row + kvo + i)] += pj * go[i];
                    }
                }
                for (int64_t i = 0; i < d; ++i) dq.host<float>()[off + i] = float(dq_acc[size_t(i)]);
            }
        }
        for (int64_t i = 0; i < row * n_slots; ++i) {
            dk.host<float>()[i] = float(dk_acc[size_t(i)]);
            dv.host<float>()[i] = float(dv_acc[size_t(i)]);
        }
    }

    void get_rows_back(const tensor& d_out, const tensor& ids, const tensor& d_table) override {
        checks::get_rows_back(d_out, ids, d_table);
        const int64_t k = d_out.ne[0], m_rows = d_out.nrows();
        const int32_t* id = ids.host<const int32_t>();
        for (int64_t m = 0; m < m_rows; ++m) {  // every id checked before anything is written
            if (id[m] < 0 || id[m] >= d_table.nrows()) {
                throw error(TANDEM_ERR_INVALID_ARGUMENT, "get_rows_back: id " + std::to_string(id[m]) +
                                                             " outside table of " + std::to_string(d_table.nrows()));
            }
        }
        for (int64_t m = 0; m < m_rows; ++m) {
            float* t = d_table.host<float>() + int64_t(id[m]) * k;
            for (int64_t i = 0; i < k; ++i) t[i] += d_out.host<const float>()[m * k + i];
        }
    }

    void cross_entropy(const tensor& z, const tensor& ids, const tensor& p, float grad_scale, const tensor& loss,
                       const tensor& d_logits) override {
        checks::cross_entropy(z, ids, p, loss, d_logits);
        const int64_t n_vocab = z.ne[0], k = ids.ne[0];
        const int32_t* id = ids.host<const int32_t>();
        for (int64_t i = 0; i < ids.nelements(); ++i) {
            if (id[i] < 0 || id[i] >= n_vocab) {
                throw error(TANDEM_ERR_INVALID_ARGUMENT, "cross_entropy: target id " + std::to_string(id[i]) +
                                                             " outside a vocabulary of " + std::to_string(n_vocab));
            }
        }
        for (int64_t m = 0; m < z.nrows(); ++m) {
            const float* zr = z.host<const float>() + m * n_vocab;
            const int32_t* ir = id + m * k;
            const float* pr = p.host<const float>() + m * k;
            float* o = d_logits.host<float>() + m * n_vocab;
            double mass = 0.0;
            bool masked = true;
            for (int64_t j = 0; j < k; ++j) mass += pr[j], masked = masked && pr[j] == 0.f;
            if (masked) {
                loss.host<float>()[m] = 0.f;
                for (int64_t i = 0; i < n_vocab; ++i) o[i] = 0.f;
                continue;
            }
            double best = -std::numeric_limits<double>::infinity(), sum = 0.0;
            for (int64_t i = 0; i < n_vocab; ++i) best = std::max(best, double(zr[i]));
            for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(double(zr[i]) - best);
            const double lse = best + std::log(sum);
            // The targets' logits are read before d_logits (which may alias z) is written.
            std::vector<double> target_z(static_cast<size_t>(k)), target_p(static_cast<size_t>(k), 0.0);
            double l = 0.0;
            for (int64_t j = 0; j < k; ++j) {
                target_z[size_t(j)] = zr[ir[j]];
                l += double(pr[j]) * (lse - target_z[size_t(j)]);
                for (int64_t t = 0; t < k; ++t)  // a repeated id carries the sum of its probabilities
                    if (ir[t] == ir[j]) target_p[size_t(j)] += pr[t];
            }
            loss.host<float>()[m] = float(l);
            for (int64_t i = 0; i < n_vocab; ++i) o[i] = float(grad_scale * mass * std::exp(double(zr[i]) - lse));
            for (int64_t j = 0; j < k; ++j) {
                o[ir[j]] = float(grad_scale * (mass * std::exp(target_z[size_t(j)] - lse) - target_p[size_t(j)]));
            }
        }
    }

    void adamw(const tensor& param, const tensor& grad, const tensor& m, const tensor& v,
               const adamw_params& p) override {
        checks::adamw(param, grad, m, v, p);
        const adamw_corrections bc = adamw_bias_corrections(p);
        for (int64_t i = 0; i < param.nelements(); ++i) {
            const double g = double(grad.host<const float>()[i]) * p.grad_scale;
            double w = param.host<float>()[i];
            w -= double(p.lr) * p.weight_decay * w;
            const double mi = double(p.beta1) * m.host<float>()[i] + (1.0 - double(p.beta1)) * g;
            const double vi = double(p.beta2) * v.host<float>()[i] + (1.0 - double(p.beta2)) * g * g;
            m.host<float>()[i] = float(mi);
            v.host<float>()[i] = float(vi);
            w -= double(p.lr) * (mi / bc.bc1) / (std::sqrt(vi / bc.bc2) + double(p.eps));
            param.host<float>()[i] = float(w);
        }
    }

    void scale(const tensor& x, float s, const tensor& out) override {
        checks::scale(x, out);
        for (int64_t i = 0; i < x.nelements(); ++i) out.host<float>()[i] = s * x.host<const float>()[i];
    }

    void sum_sq(const tensor& x, const tensor& out) override {
        checks::sum_sq(x, out);
        double acc = 0.0;
        for (int64_t i = 0; i < x.nelements(); ++i) acc += double(x.host<const float>()[i]) * x.host<const float>()[i];
        out.host<float>()[0] = float(acc);
    }
};

}  // namespace

std::unique_ptr<backend> make_cpu_ref_backend() { return std::make_unique<cpu_ref_backend>(); }

}  // namespace tandem
