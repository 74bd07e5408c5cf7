// cpu_ref: the readable reference implementation of every op in backends/backend.h.
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
            case op::get_rows: case op::matmul: return dequant_supported(t);
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
};

}  // namespace

std::unique_ptr<backend> make_cpu_ref_backend() { return std::make_unique<cpu_ref_backend>(); }

}  // namespace tandem
