// cpu: the fast CPU backend. Host memory (zero-copy wrap_host), a persistent thread pool for every loop
// worth spreading, OpenBLAS for f32 GEMM, vector kernels (cpu_simd.h) for the rest. matmul and attention
// live in cpu_matmul.cpp and cpu_attention.cpp, the training ops in cpu_train.cpp; the element-wise and row-wise
// ops are here.
#include "backends/cpu/cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/cpu_simd.h"
#include "backends/cpu/host_buffer.h"
#include "backends/cpu/quant_acts.h"
#include "backends/cpu/thread_pool.h"
#include "backends/op_checks.h"
#include "engine/error.h"

namespace tandem {

namespace {

int default_threads() { return std::max(1, int(std::thread::hardware_concurrency())); }

// Rows of a cache or table must be addressed within their tensor: bad ids come from callers.
void check_index(const char* op, const char* what, int64_t id, int64_t n_rows) {
    if (id < 0 || id >= n_rows) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, std::string(op) + ": " + what + " " + std::to_string(id) +
                                                     " outside [0, " + std::to_string(n_rows) + ")");
    }
}

char* row_ptr(const tensor& t, int64_t row) { return t.host<char>() + size_t(row) * t.row_bytes(); }

// The element-wise and per-row ops here split from ~8K elements a chunk, a quarter of cpu::grain's default, now
// that a spinning worker joins a call within ~1 us. The ops of a 9-row verification pass (rms_norm and add over
// 9 x 2048, rope, kv_write) then take both threads. With the pool's spin at 150 us instead of 50, alternated pass
// by pass in one process on the Intel VM (1.1B Q4_0, 500 passes each): 9 rows 42.1 -> 41.8 ms median, p25 41.3 ->
// 40.8; with 300 us, 43.2 -> 42.5, decode 26.0 -> 25.7.
int64_t grain(int64_t elements_per_item) { return cpu::grain(elements_per_item, int64_t(1) << 13); }

// out[i] = f(i) over a flat range [0, n), split over the pool in blocks of whole vectors.
template <typename F>
void for_elements(thread_pool& pool, int64_t n, F&& f) {
    pool.parallel_for((n + simd::width - 1) / simd::width, grain(simd::width),
                      [&](int64_t b, int64_t e) { f(b * simd::width, std::min(n, e * simd::width)); });
}

// One candidate of a top-k selection; a ranks before b when its value is larger, or equal with a lower index.
struct scored {
    float v;
    int32_t i;
};
bool ranks_before(const scored& a, const scored& b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

// The best min(k, n) elements of x[0, n) (ids first + i) into sel, best first; returns how many. A heap keeps
// the worst one kept on top; ids ascend, so a later element enters only with a strictly larger value. Blocks
// whose maximum does not beat that value (most of a vocabulary row, once the heap is warm) are skipped whole.
int32_t select_top_k(const float* x, int64_t first, int64_t n, int32_t k, scored* sel) {
    using namespace simd;
    const int32_t c = int32_t(std::min<int64_t>(k, n));
    for (int32_t j = 0; j < c; ++j) sel[j] = {x[j], int32_t(first + j)};
    std::make_heap(sel, sel + c, ranks_before);
    auto offer = [&](int64_t i) {
        if (x[i] > sel[0].v) {
            std::pop_heap(sel, sel + c, ranks_before);
            sel[c - 1] = {x[i], int32_t(first + i)};
            std::push_heap(sel, sel + c, ranks_before);
        }
    };
    constexpr int64_t block = 4 * width;
    int64_t i = c;
    for (; i + block <= n; i += block) {
        const vf a = simd::max(load(x + i), load(x + i + width));
        const vf b = simd::max(load(x + i + 2 * width), load(x + i + 3 * width));
        if (!(reduce_max(simd::max(a, b)) > sel[0].v)) continue;
        for (int64_t j = i; j < i + block; ++j) offer(j);
    }
    for (; i < n; ++i) offer(i);
    std::sort_heap(sel, sel + c, ranks_before);
    return c;
}

class cpu_backend final : public host_memory_backend {
   public:
    cpu_backend() { set_threads(default_threads()); }

    std::string name() const override { return "cpu"; }
    std::string describe() const override {
        const cpu::quant_path p = cpu::chosen_path();
        const char* path = p == cpu::quant_path::avx512 ? "avx512-vnni (row groups of 16 prepared at load)"
                           : p == cpu::quant_path::avx2 ? "avx2"
                                                          : "scalar";
        return std::string("cpu: quantized matmul ") + path;  // threads: the benchmarks record their own
    }

    bool supports(op o, dtype t) const override {
        // The same matrix as cpu_ref: f32/f16/q8_0/q4_0/q4_k/q6_k weights (get_rows, matmul, matmul_t), f32/f16
        // caches (attention, kv_*), f32 for the rest (the training ops in cpu_train.cpp).
        switch (o) {
            case op::matmul_t:
                return cpu::matmul_t_supported(t);
            case op::get_rows:
            case op::matmul:
                return t == dtype::f32 || t == dtype::f16 || cpu::quant_supported(t);
            case op::attention:
            case op::kv_write:
            case op::kv_copy:
                return t == dtype::f32 || t == dtype::f16;
            default:
                return t == dtype::f32;
        }
    }

    void set_threads(int n) override {
        n = n > 0 ? n : default_threads();
        if (!pool_ || pool_->size() != n) {
            pool_.reset();  // join the old workers before starting new ones
            pool_ = std::make_unique<thread_pool>(n);
        }
        cpu::set_blas_threads(n);
    }

    void get_rows(const tensor& table, const tensor& ids, const tensor& out) override {
        checks::get_rows(table, ids, out);
        const int64_t k = table.ne[0], m_rows = ids.nelements();
        const int32_t* id = ids.host<const int32_t>();
        for (int64_t m = 0; m < m_rows; ++m) check_index("get_rows", "id", id[m], table.nrows());
        if (cpu::quant_supported(table.type)) return cpu::get_rows_quant(*pool_, table, id, out);
        if (table.type != dtype::f32 && table.type != dtype::f16) {
            throw error(TANDEM_ERR_UNSUPPORTED, "cpu get_rows: table type " + std::string(dtype_name(table.type)));
        }
        pool_->parallel_for(m_rows, grain(k), [&](int64_t b, int64_t e) {
            for (int64_t m = b; m < e; ++m) {
                float* o = out.host<float>() + m * k;
                if (table.type == dtype::f32) {
                    std::memcpy(o, row_ptr(table, id[m]), size_t(k) * 4);
                } else {
                    simd::convert(reinterpret_cast<const uint16_t*>(row_ptr(table, id[m])), o, k);
                }
            }
        });
    }

    void rms_norm(const tensor& x, const tensor& w, float eps, const tensor& out) override {
        checks::rms_norm(x, w, out);
        const int64_t k = x.ne[0];
        const float* wp = w.host<const float>();
        pool_->parallel_for(x.nrows(), grain(k), [&](int64_t b, int64_t e) {
            using namespace simd;
            for (int64_t m = b; m < e; ++m) {
                const float* xr = x.host<const float>() + m * k;
                float* o = out.host<float>() + m * k;
                const float scale = 1.f / std::sqrt(dot(xr, xr, k) / float(k) + eps);
                const vf sv = set1(scale);
                int64_t i = 0;
                for (; i + width <= k; i += width) store(o + i, mul(mul(load(xr + i), sv), load(wp + i)));
                for (; i < k; ++i) o[i] = xr[i] * scale * wp[i];
            }
        });
    }

    // Q8_0 / Q4_0 weights get their rows interleaved in groups of 16 (cpu_matmul_packed.cpp) on the AVX512-VNNI
    // path; the copy replaces the original for matmul only.
    bool prepare_weight(const tensor& w) override {
        if (w.buf == nullptr) return false;
        auto l = cpu::pack_quant(*pool_, arena_, w);
        if (!l) return false;
        w.buf->attach_layout(w, std::move(l));
        return true;
    }

    void matmul(const tensor& w, const tensor& x, const tensor& out) override {
        checks::matmul(w, x, out);
        if (auto l = w.buf->layout(w)) {
            const derived_layout* ls[] = {l.get()};
            if (cpu::matmul_packed(*pool_, ls, x, std::span<const tensor>(&out, 1))) return;
        }
        if (cpu::quant_supported(w.type)) return cpu::matmul_quant(*pool_, w, x, out);
        cpu::matmul(*pool_, w, x, out);
    }
    // Weights with packed layouts of one type and row length share one activation quantization and one
    // parallel pass (no thread hand-off, tail or stream restart between them); others go one by one.
    void matmul_multi(std::span<const tensor> ws, const tensor& x, std::span<const tensor> outs) override {
        if (ws.size() != outs.size() || ws.empty()) return backend::matmul_multi(ws, x, outs);
        std::vector<std::shared_ptr<const derived_layout>> held;
        std::vector<const derived_layout*> ls;
        for (size_t i = 0; i < ws.size(); ++i) {
            checks::matmul(ws[i], x, outs[i]);
            held.push_back(ws[i].buf->layout(ws[i]));
            ls.push_back(held.back().get());
        }
        if (std::find(ls.begin(), ls.end(), nullptr) == ls.end() && cpu::matmul_packed(*pool_, ls, x, outs)) return;
        backend::matmul_multi(ws, x, outs);
    }

    void rope(const tensor& x, const tensor& pos, const rope_params& p) override {
        checks::rope(x, pos, p);
        const int64_t d = x.ne[0], h = x.ne[1], m_rows = x.ne[2] * x.ne[3], half = p.n_rot / 2;
        // The same float expression as cpu_ref, so angles agree exactly even at large positions.
        std::vector<float> inv_freq(static_cast<size_t>(half));
        for (int64_t i = 0; i < half; ++i)
            inv_freq[size_t(i)] = 1.f / std::pow(p.freq_base, float(2 * i) / float(p.n_rot));
        const int32_t* ps = pos.host<const int32_t>();
        pool_->parallel_for(m_rows, grain(d * h * 4), [&](int64_t b, int64_t e) {
            std::vector<float> cs(size_t(half) * 2);
            for (int64_t m = b; m < e; ++m) {
                const float position = float(ps[m]);
                for (int64_t i = 0; i < half; ++i) {
                    const float theta = position * inv_freq[size_t(i)];
                    cs[size_t(2 * i)] = std::cos(theta), cs[size_t(2 * i + 1)] = std::sin(theta);
                }
                for (int64_t head = 0; head < h; ++head) {
                    float* v = x.host<float>() + (m * h + head) * d;
                    for (int64_t i = 0; i < half; ++i) {
                        const float c = cs[size_t(2 * i)], s = cs[size_t(2 * i + 1)];
                        const float a = v[2 * i], bb = v[2 * i + 1];
                        v[2 * i] = a * c - bb * s;
                        v[2 * i + 1] = a * s + bb * c;
                    }
                }
            }
        });
    }

    void attention(const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
                   const tensor& slots, const attention_params& p, const tensor& out) override {
        checks::attention(q, k_cache, v_cache, meta, slots, out);
        cpu::attention(*pool_, q, k_cache, v_cache, meta, slots, p, out);
    }

    void swiglu(const tensor& gate, const tensor& up, const tensor& out) override {
        checks::same_f32("swiglu", gate, up, out);
        const float* g = gate.host<const float>();
        const float* u = up.host<const float>();
        float* o = out.host<float>();
        for_elements(*pool_, gate.nelements(), [&](int64_t b, int64_t e) {
            using namespace simd;
            int64_t i = b;
            for (; i + width <= e; i += width) {
                const vf gv = load(g + i);
                const vf silu = div(gv, simd::add(set1(1.f), simd::exp(mul(gv, set1(-1.f)))));
                store(o + i, mul(silu, load(u + i)));
            }
            for (; i < e; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
        });
    }

    void add(const tensor& a, const tensor& b, const tensor& out) override {
        checks::same_f32("add", a, b, out);
        const float* ap = a.host<const float>();
        const float* bp = b.host<const float>();
        float* o = out.host<float>();
        for_elements(*pool_, a.nelements(), [&](int64_t lo, int64_t hi) {
            using namespace simd;
            int64_t i = lo;
            for (; i + width <= hi; i += width) store(o + i, simd::add(load(ap + i), load(bp + i)));
            for (; i < hi; ++i) o[i] = ap[i] + bp[i];
        });
    }

    void softmax(const tensor& x, const tensor& out) override {
        checks::softmax(x, out);
        const int64_t k = x.ne[0];
        if (k == 0) return;
        pool_->parallel_for(x.nrows(), grain(k * 4), [&](int64_t b, int64_t e) {
            using namespace simd;
            for (int64_t m = b; m < e; ++m) {
                const float* xr = x.host<const float>() + m * k;
                float* o = out.host<float>() + m * k;
                const float best = simd::max_of(xr, k);
                const vf shift = set1(-best);
                vf sv = zero();
                int64_t i = 0;
                for (; i + width <= k; i += width) {
                    const vf ev = simd::exp(simd::add(load(xr + i), shift));
                    store(o + i, ev);
                    sv = simd::add(sv, ev);
                }
                float sum = reduce_add(sv);
                for (; i < k; ++i) sum += (o[i] = std::exp(xr[i] - best));
                const float inv = 1.f / sum;
                const vf iv = set1(inv);
                for (i = 0; i + width <= k; i += width) store(o + i, mul(load(o + i), iv));
                for (; i < k; ++i) o[i] *= inv;
            }
        });
    }

    void kv_write(const tensor& src, const tensor& cache, const tensor& slots) override {
        checks::kv_write(src, cache, slots);
        const int32_t* sl = slots.host<const int32_t>();
        const int64_t k = src.ne[0], m_rows = src.nrows();
        for (int64_t m = 0; m < m_rows; ++m) check_index("kv_write", "slot", sl[m], cache.nrows());
        if (cache.type != dtype::f32 && cache.type != dtype::f16) {
            throw error(TANDEM_ERR_UNSUPPORTED, "cpu kv_write: cache type " + std::string(dtype_name(cache.type)));
        }
        pool_->parallel_for(m_rows, grain(k), [&](int64_t b, int64_t e) {
            for (int64_t m = b; m < e; ++m) {
                const float* s = src.host<const float>() + m * k;
                if (cache.type == dtype::f32) {
                    std::memcpy(row_ptr(cache, sl[m]), s, size_t(k) * 4);
                } else {
                    simd::convert(s, reinterpret_cast<uint16_t*>(row_ptr(cache, sl[m])), k);
                }
            }
        });
    }

    void kv_copy(const tensor& cache, const tensor& src, const tensor& dst) override {
        checks::kv_copy(cache, src, dst);
        const int32_t* s = src.host<const int32_t>();
        const int32_t* d = dst.host<const int32_t>();
        const int64_t n = src.nelements();
        for (int64_t i = 0; i < n; ++i) {
            check_index("kv_copy", "src slot", s[i], cache.nrows());
            check_index("kv_copy", "dst slot", d[i], cache.nrows());
        }
        // All reads before any write, so overlapping moves (compaction) see the old rows. A few rows per
        // layer: a serial memcpy is faster than waking workers.
        const size_t rb = cache.row_bytes();
        std::vector<char> staged(rb * size_t(n));  // local, so concurrent calls on one backend stay safe
        for (int64_t i = 0; i < n; ++i) std::memcpy(staged.data() + rb * size_t(i), row_ptr(cache, s[i]), rb);
        for (int64_t i = 0; i < n; ++i) std::memcpy(row_ptr(cache, d[i]), staged.data() + rb * size_t(i), rb);
    }

    void argmax(const tensor& x, const tensor& out) override {
        checks::argmax(x, out);
        const int64_t k = x.ne[0];
        pool_->parallel_for(x.nrows(), grain(k), [&](int64_t b, int64_t e) {
            for (int64_t m = b; m < e; ++m) {
                const float* xr = x.host<const float>() + m * k;
                // Vector max, then the first index holding it: the first on ties, like cpu_ref.
                const float best = simd::max_of(xr, k);
                int64_t i = 0;
                while (i < k && !(xr[i] == best)) ++i;
                out.host<int32_t>()[m] = int32_t(i < k ? i : 0);
            }
        });
    }

    void top_k(const tensor& x, int32_t k, const tensor& out_ids, const tensor& out_vals) override {
        checks::top_k(x, k, out_ids, out_vals);
        const int64_t n = x.ne[0], m_rows = x.nrows();
        // Fewer rows than threads (sampling one or a few positions): rows are cut into parts of at least 32K
        // elements, selected in parallel and merged; otherwise each row is one part.
        const int64_t threads = pool_->size();
        const int64_t parts = m_rows >= threads
                                  ? 1
                                  : std::clamp<int64_t>(n / std::max<int64_t>(int64_t(1) << 15, 4 * int64_t(k)), 1,
                                                        (threads + m_rows - 1) / m_rows);
        const int64_t len = (n + parts - 1) / parts;
        std::vector<scored> cand(size_t(m_rows * parts * k));
        std::vector<int32_t> count(size_t(m_rows * parts));
        pool_->parallel_for(m_rows * parts, grain(len), [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) {
                const int64_t m = t / parts, first = t % parts * len;
                count[size_t(t)] = first >= n ? 0
                                              : select_top_k(x.host<const float>() + m * n + first, first,
                                                             std::min(len, n - first), k, cand.data() + t * k);
            }
        });
        std::vector<scored> merged;
        for (int64_t m = 0; m < m_rows; ++m) {
            const scored* best = cand.data() + m * parts * k;
            if (parts > 1) {
                merged.clear();
                for (int64_t p = 0; p < parts; ++p) {
                    const scored* c = cand.data() + (m * parts + p) * k;
                    merged.insert(merged.end(), c, c + count[size_t(m * parts + p)]);
                }
                std::partial_sort(merged.begin(), merged.begin() + k, merged.end(), ranks_before);
                best = merged.data();
            }
            for (int32_t j = 0; j < k; ++j) {
                out_ids.host<int32_t>()[m * k + j] = best[j].i;
                out_vals.host<float>()[m * k + j] = best[j].v;
            }
        }
    }

    // ---- training (cpu_train.cpp) ----

    void matmul_t(const tensor& w, const tensor& dy, const tensor& dx) override {
        checks::matmul_t(w, dy, dx);
        cpu::matmul_t(*pool_, w, dy, dx);
    }
    void weight_grad(const tensor& dy, const tensor& x, float alpha, float beta, const tensor& dw) override {
        checks::weight_grad(dy, x, beta, dw);
        cpu::weight_grad(dy, x, alpha, beta, dw);
    }
    void rms_norm_back(const tensor& x, const tensor& w, const tensor& dy, float eps, const tensor& dx) override {
        checks::rms_norm_back(x, w, dy, dx);
        cpu::rms_norm_back(*pool_, x, w, dy, eps, dx);
    }
    void swiglu_back(const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate,
                     const tensor& d_up) override {
        checks::swiglu_back(gate, up, dy, d_gate, d_up);
        cpu::swiglu_back(*pool_, gate, up, dy, d_gate, d_up);
    }
    void attention_back(const tensor& q, const tensor& k, const tensor& v, const tensor& meta, const tensor& out,
                        const tensor& d_out, const attention_params& p, const tensor& dq, const tensor& dk,
                        const tensor& dv) override {
        checks::attention_back(q, k, v, meta, out, d_out, dq, dk, dv);
        cpu::attention_back(*pool_, q, k, v, meta, out, d_out, p, dq, dk, dv);
    }
    void get_rows_back(const tensor& d_out, const tensor& ids, const tensor& d_table) override {
        checks::get_rows_back(d_out, ids, d_table);
        cpu::get_rows_back(*pool_, d_out, ids, d_table);
    }
    void cross_entropy(const tensor& z, const tensor& ids, const tensor& p, float grad_scale, const tensor& loss,
                       const tensor& d_logits) override {
        checks::cross_entropy(z, ids, p, loss, d_logits);
        cpu::cross_entropy(*pool_, z, ids, p, grad_scale, loss, d_logits);
    }
    void adamw(const tensor& param, const tensor& grad, const tensor& m, const tensor& v,
               const adamw_params& p) override {
        checks::adamw(param, grad, m, v, p);
        cpu::adamw(*pool_, param, grad, m, v, p);
    }
    void scale(const tensor& x, float s, const tensor& out) override {
        checks::scale(x, out);
        cpu::scale(*pool_, x, s, out);
    }
    void sum_sq(const tensor& x, const tensor& out) override {
        checks::sum_sq(x, out);
        cpu::sum_sq(*pool_, x, out);
    }

   private:
    std::unique_ptr<thread_pool> pool_;
    host_arena arena_;  // prepared weight layouts
};

}  // namespace

std::unique_ptr<backend> make_cpu_backend() { return std::make_unique<cpu_backend>(); }

}  // namespace tandem
