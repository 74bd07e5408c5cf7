// The training ops of the cpu backend: backward passes, cross-entropy and AdamW (semantics in backends/backend.h).
// f32 GEMMs (matmul_t, weight_grad) go to OpenBLAS; a quantized or f16 base weight is dequantized a block-aligned
// segment of a row at a time into a thread-local buffer (never the whole matrix), and every loop worth it is spread
// over the thread pool in a way that keeps the result independent of the thread count.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/cpu_simd.h"
#include "backends/cpu/dequant.h"
#include "backends/op_checks.h"
#include "engine/error.h"

namespace tandem::cpu {

namespace {

// Columns of dx per work item in the dequantizing matmul_t: a multiple of every block size (32, 256), small
// enough that the dx tile of `t_rows` rows (64 KiB) stays in L2 while the weight rows stream past.
constexpr int64_t t_cols = 256, t_rows = 64;

// dst[i] += a0 * s0[i] + a1 * s1[i] + a2 * s2[i] + a3 * s3[i]: four weight rows per pass over a dx row, so each dx
// element is loaded and stored once per four multiply-adds.
void axpy4(float* dst, const float* s, int64_t stride, const float* a, int64_t n) {
    using namespace simd;
    const vf a0 = set1(a[0]), a1 = set1(a[1]), a2 = set1(a[2]), a3 = set1(a[3]);
    int64_t i = 0;
    for (; i + width <= n; i += width) {
        vf d = load(dst + i);
        d = fma(a0, load(s + i), d);
        d = fma(a1, load(s + stride + i), d);
        d = fma(a2, load(s + 2 * stride + i), d);
        d = fma(a3, load(s + 3 * stride + i), d);
        store(dst + i, d);
    }
    for (; i < n; ++i)
        dst[i] += a[0] * s[i] + a[1] * s[stride + i] + a[2] * s[2 * stride + i] + a[3] * s[3 * stride + i];
}

void axpy1(float* dst, const float* s, float a, int64_t n) {
    using namespace simd;
    const vf av = set1(a);
    int64_t i = 0;
    for (; i + width <= n; i += width) store(dst + i, fma(av, load(s + i), load(dst + i)));
    for (; i < n; ++i) dst[i] += a * s[i];
}

// dx = dy * W for a non-f32 W: work items are (column segment of t_cols, tile of t_rows rows of dx). Each item
// dequantizes its segment of every weight row (4 at a time) and adds it, scaled, into its dx tile.
void matmul_t_dequant(thread_pool& pool, const tensor& w, const tensor& dy, const tensor& dx) {
    const int64_t k = w.ne[0], n = w.nrows(), m_rows = dy.nrows();
    const int64_t n_seg = (k + t_cols - 1) / t_cols, n_tiles = (m_rows + t_rows - 1) / t_rows;
    const size_t row_bytes = w.row_bytes();
    const char* wp = w.host<const char>();
    const float* g = dy.host<const float>();
    float* out = dx.host<float>();
    pool.parallel_for(n_seg * n_tiles, grain(t_cols * n * std::min(m_rows, t_rows)), [&](int64_t b, int64_t e) {
        std::vector<float> seg(static_cast<size_t>(4 * t_cols));
        float a[4];
        for (int64_t item = b; item < e; ++item) {
            const int64_t k0 = item % n_seg * t_cols, len = std::min(t_cols, k - k0);
            const int64_t m0 = item / n_seg * t_rows, m1 = std::min(m_rows, m0 + t_rows);
            const size_t seg_offset = dtype_row_bytes(w.type, k0);  // k0 is block-aligned
            for (int64_t m = m0; m < m1; ++m) std::fill(out + m * k + k0, out + m * k + k0 + len, 0.f);
            int64_t j = 0;
            for (; j + 4 <= n; j += 4) {
                for (int r = 0; r < 4; ++r)
                    dequantize_row(w.type, wp + size_t(j + r) * row_bytes + seg_offset, seg.data() + r * t_cols, len);
                for (int64_t m = m0; m < m1; ++m) {
                    for (int r = 0; r < 4; ++r) a[r] = g[m * n + j + r];
                    axpy4(out + m * k + k0, seg.data(), t_cols, a, len);
                }
            }
            for (; j < n; ++j) {
                dequantize_row(w.type, wp + size_t(j) * row_bytes + seg_offset, seg.data(), len);
                for (int64_t m = m0; m < m1; ++m) axpy1(out + m * k + k0, seg.data(), g[m * n + j], len);
            }
        }
    });
}

}  // namespace

bool matmul_t_supported(dtype t) { return dequant_supported(t); }

void matmul_t(thread_pool& pool, const tensor& w, const tensor& dy, const tensor& dx) {
    const int64_t k = w.ne[0], n = w.nrows(), m = dy.nrows();
    if (k == 0 || m == 0) return;
    if (n == 0) return std::fill(dx.host<float>(), dx.host<float>() + k * m, 0.f);
    if (w.type == dtype::f32) {
        // dx {M x K} = dy {M x N} * w {N x K}, all row-major.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(m), blasint(k), blasint(n), 1.f,
                    dy.host<const float>(), blasint(n), w.host<const float>(), blasint(k), 0.f, dx.host<float>(),
                    blasint(k));
        return;
    }
    if (!dequant_supported(w.type))
        throw error(TANDEM_ERR_UNSUPPORTED, "cpu matmul_t: weight type " + std::string(dtype_name(w.type)));
    matmul_t_dequant(pool, w, dy, dx);
}

void weight_grad(const tensor& dy, const tensor& x, float alpha, float beta, const tensor& dw) {
    const int64_t k = x.ne[0], n = dy.ne[0], m = x.nrows();
    float* out = dw.host<float>();
    // beta = 0 must not read dw (it may hold NaN); zero it rather than trust BLAS to skip the read.
    if (beta == 0.f) std::fill(out, out + k * n, 0.f);
    if (k == 0 || n == 0 || m == 0) return;
    // dw {N x K} = alpha * dy^T {N x M} * x {M x K} + dw.
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(n), blasint(k), blasint(m), alpha,
                dy.host<const float>(), blasint(n), x.host<const float>(), blasint(k), 1.f, out, blasint(k));
}

void rms_norm_back(thread_pool& pool, const tensor& x, const tensor& w, const tensor& dy, float eps, const tensor& dx) {
    const int64_t k = x.ne[0];
    const float* wp = w.host<const float>();
    pool.parallel_for(x.nrows(), grain(3 * k), [&](int64_t b, int64_t e) {
        using namespace simd;
        for (int64_t m = b; m < e; ++m) {
            const float* xr = x.host<const float>() + m * k;
            const float* g = dy.host<const float>() + m * k;
            float* o = dx.host<float>() + m * k;
            vf ss = zero(), wgx = zero();
            int64_t i = 0;
            for (; i + width <= k; i += width) {
                const vf xv = load(xr + i);
                ss = fma(xv, xv, ss);
                wgx = fma(mul(load(wp + i), load(g + i)), xv, wgx);
            }
            float s = reduce_add(ss), c = reduce_add(wgx);
            for (; i < k; ++i) s += xr[i] * xr[i], c += wp[i] * g[i] * xr[i];
            const float r = 1.f / std::sqrt(s / float(k) + eps);
            c *= r * r * r / float(k);
            // Every dy of the row was read above, and each element is read before it is written: dx may alias dy.
            const vf rv = set1(r), cv = set1(c);
            for (i = 0; i + width <= k; i += width)
                store(o + i, fnma(load(xr + i), cv, mul(mul(rv, load(wp + i)), load(g + i))));
            for (; i < k; ++i) o[i] = r * wp[i] * g[i] - xr[i] * c;
        }
    });
}

void swiglu_back(thread_pool& pool, const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate,
                 const tensor& d_up) {
    const int64_t n = gate.nelements();
    const float* gp = gate.host<const float>();
    const float* up_p = up.host<const float>();
    const float* dp = dy.host<const float>();
    float* og = d_gate.host<float>();
    float* ou = d_up.host<float>();
    pool.parallel_for((n + simd::width - 1) / simd::width, grain(4 * simd::width), [&](int64_t b, int64_t e) {
        using namespace simd;
        int64_t i = b * width;
        const int64_t end = std::min(n, e * width);
        const vf one = set1(1.f);
        // All three inputs are loaded before either output is stored (outputs may alias them).
        for (; i + width <= end; i += width) {
            const vf g = load(gp + i), u = load(up_p + i), d = load(dp + i);
            const vf s = div(one, simd::add(one, simd::exp(mul(g, set1(-1.f)))));
            const vf ds = mul(mul(d, s), simd::add(one, mul(g, fnma(s, one, one))));  // s * (1 + g * (1 - s))
            store(og + i, mul(ds, u));
            store(ou + i, mul(mul(d, g), s));
        }
        for (; i < end; ++i) {
            const float g = gp[i], u = up_p[i], d = dp[i];
            const float s = 1.f / (1.f + std::exp(-g));
            og[i] = d * s * (1.f + g * (1.f - s)) * u;
            ou[i] = d * g * s;
        }
    });
}

void attention_back(thread_pool& pool, const tensor& q, const tensor& k, const tensor& v, const tensor& meta,
                    const tensor& out, const tensor& d_out, const attention_params& p, const tensor& dq,
                    const tensor& dk, const tensor& dv) {
    const int64_t d = q.ne[0], hq = q.ne[1], m_rows = q.ne[2];
    const int64_t row = k.ne[0], hkv = row / d, group = hq / hkv, n_slots = k.nrows();
    const int32_t* mt = meta.host<const int32_t>();
    checks::attention_back_rows(mt, m_rows, n_slots);
    // Runs that do not overlap (causal chains, training batches) take the tiled kernels; the loops below are the
    // general case (runs sharing slots from different starts), at O(slots x rows) cost.
    if (attention_back_grouped(pool, q, k, v, meta, out, d_out, p.scale, dq, dk, dv)) return;
    const float* qp = q.host<const float>();
    const float* kp = k.host<const float>();
    const float* vp = v.host<const float>();
    const float* gp = d_out.host<const float>();
    const float* op = out.host<const float>();
    const float sc = p.scale;

    // Pass 1, over (row, query head): the softmax row's log-normaliser and d_out . out (kept for pass 2), and dq.
    std::vector<float> lse(size_t(m_rows * hq)), delta(size_t(m_rows * hq));
    pool.parallel_for(m_rows * hq, 1, [&](int64_t b, int64_t e) {
        std::vector<float> s;
        std::vector<float> acc(static_cast<size_t>(d));
        for (int64_t item = b; item < e; ++item) {
            const int64_t m = item / hq, h = item % hq, off = item * d, kvo = h / group * d;
            const int64_t begin = mt[4 * m], len = mt[4 * m + 1];
            s.resize(size_t(len));
            float best = -std::numeric_limits<float>::infinity();
            for (int64_t j = 0; j < len; ++j) {
                s[size_t(j)] = simd::dot(qp + off, kp + (begin + j) * row + kvo, d) * sc;
                best = std::max(best, s[size_t(j)]);
            }
            float sum = 0.f;
            for (auto& x : s) sum += (x = std::exp(x - best));
            lse[size_t(item)] = best + std::log(sum);
            const float dl = simd::dot(gp + off, op + off, d);
            delta[size_t(item)] = dl;
            std::fill(acc.begin(), acc.end(), 0.f);
            for (int64_t j = 0; j < len; ++j) {
                const float pj = s[size_t(j)] / sum;
                const float ds = pj * (simd::dot(gp + off, vp + (begin + j) * row + kvo, d) - dl);
                axpy1(acc.data(), kp + (begin + j) * row + kvo, sc * ds, d);
            }
            std::memcpy(dq.host<float>() + off, acc.data(), size_t(d) * 4);
        }
    });

    // Pass 2, over (kv head, slot): every (row, grouped head) that sees the slot adds to its dk and dv. Each item
    // owns its output rows, so nothing is shared and a slot no row sees gets zeros.
    pool.parallel_for(hkv * n_slots, grain(d * m_rows * group), [&](int64_t b, int64_t e) {
        for (int64_t item = b; item < e; ++item) {
            const int64_t kvh = item / n_slots, slot = item % n_slots, kvo = kvh * d;
            const float* kr = kp + slot * row + kvo;
            const float* vr = vp + slot * row + kvo;
            float* dkr = dk.host<float>() + slot * row + kvo;
            float* dvr = dv.host<float>() + slot * row + kvo;
            std::fill(dkr, dkr + d, 0.f), std::fill(dvr, dvr + d, 0.f);
            for (int64_t m = 0; m < m_rows; ++m) {
                if (slot < mt[4 * m] || slot >= int64_t(mt[4 * m]) + mt[4 * m + 1]) continue;
                for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
                    const int64_t idx = m * hq + h, off = idx * d;
                    const float pj = std::exp(simd::dot(qp + off, kr, d) * sc - lse[size_t(idx)]);
                    const float ds = pj * (simd::dot(gp + off, vr, d) - delta[size_t(idx)]);
                    axpy1(dkr, qp + off, sc * ds, d);
                    axpy1(dvr, gp + off, pj, d);
                }
            }
        }
    });
}

void get_rows_back(thread_pool& pool, const tensor& d_out, const tensor& ids, const tensor& d_table) {
    const int64_t k = d_out.ne[0], m_rows = d_out.nrows();
    const int32_t* id = ids.host<const int32_t>();
    for (int64_t m = 0; m < m_rows; ++m) {  // all ids checked before anything is written
        if (id[m] < 0 || id[m] >= d_table.nrows()) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "get_rows_back: id " + std::to_string(id[m]) + " outside [0, " +
                                                         std::to_string(d_table.nrows()) + ")");
        }
    }
    // Split over columns, so every element still receives its rows in increasing m (the contract's order).
    const int64_t cols = 64, n_chunks = (k + cols - 1) / cols;
    pool.parallel_for(n_chunks, grain(cols * m_rows), [&](int64_t b, int64_t e) {
        const int64_t k0 = b * cols, k1 = std::min(k, e * cols);
        for (int64_t m = 0; m < m_rows; ++m) {
            const float* src = d_out.host<const float>() + m * k;
            float* dst = d_table.host<float>() + int64_t(id[m]) * k;
            for (int64_t i = k0; i < k1; ++i) dst[i] += src[i];
        }
    });
}

void cross_entropy(thread_pool& pool, const tensor& z, const tensor& ids, const tensor& p, float grad_scale,
                   const tensor& loss, const tensor& d_logits) {
    const int64_t n_vocab = z.ne[0], kk = ids.ne[0], m_rows = z.nrows();
    const int32_t* id = ids.host<const int32_t>();
    for (int64_t i = 0; i < ids.nelements(); ++i) {
        if (id[i] < 0 || id[i] >= n_vocab) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "cross_entropy: target id " + std::to_string(id[i]) +
                                                         " outside [0, " + std::to_string(n_vocab) + ")");
        }
    }
    pool.parallel_for(m_rows, grain(3 * n_vocab), [&](int64_t b, int64_t e) {
        using namespace simd;
        std::vector<float> target_z(static_cast<size_t>(kk)), target_p(static_cast<size_t>(kk));
        for (int64_t m = b; m < e; ++m) {
            const float* zr = z.host<const float>() + m * n_vocab;
            const int32_t* ir = id + m * kk;
            const float* pr = p.host<const float>() + m * kk;
            float* o = d_logits.host<float>() + m * n_vocab;
            float mass = 0.f;
            bool masked = true;
            for (int64_t j = 0; j < kk; ++j) mass += pr[j], masked = masked && pr[j] == 0.f;
            if (masked) {
                loss.host<float>()[m] = 0.f;
                std::fill(o, o + n_vocab, 0.f);
                continue;
            }
            // Max subtraction first: logits of +-80 would overflow a float sum of exponentials.
            const float best = simd::max_of(zr, n_vocab);
            vf sv = zero();
            int64_t i = 0;
            for (; i + width <= n_vocab; i += width)
                sv = simd::add(sv, simd::exp(simd::add(load(zr + i), set1(-best))));
            float sum = reduce_add(sv);
            for (; i < n_vocab; ++i) sum += std::exp(zr[i] - best);
            const float lse = best + std::log(sum);
            // The targets' logits are read before d_logits (which may alias z) is written.
            float l = 0.f;
            for (int64_t j = 0; j < kk; ++j) {
                target_z[size_t(j)] = zr[ir[j]];
                l += pr[j] * (lse - target_z[size_t(j)]);
                float same = 0.f;  // a repeated id carries the sum of its probabilities
                for (int64_t t = 0; t < kk; ++t) same += ir[t] == ir[j] ? pr[t] : 0.f;
                target_p[size_t(j)] = same;
            }
            loss.host<float>()[m] = l;
            const float f = grad_scale * mass;
            const vf fv = set1(f), shift = set1(-lse);
            for (i = 0; i + width <= n_vocab; i += width)
                store(o + i, mul(fv, simd::exp(simd::add(load(zr + i), shift))));
            for (; i < n_vocab; ++i) o[i] = f * std::exp(zr[i] - lse);
            for (int64_t j = 0; j < kk; ++j)
                o[ir[j]] = grad_scale * (mass * std::exp(target_z[size_t(j)] - lse) - target_p[size_t(j)]);
        }
    });
}

void adamw(thread_pool& pool, const tensor& param, const tensor& grad, const tensor& m, const tensor& v,
           const adamw_params& p) {
    const adamw_corrections bc = adamw_bias_corrections(p);
    const int64_t n = param.nelements();
    float* w = param.host<float>();
    const float* g = grad.host<const float>();
    float* mp = m.host<float>();
    float* vp = v.host<float>();
    const float decay = 1.f - p.lr * p.weight_decay, inv_bc1 = 1.f / bc.bc1, inv_bc2 = 1.f / bc.bc2;
    pool.parallel_for(n, grain(8), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const float gi = g[i] * p.grad_scale;
            const float mi = p.beta1 * mp[i] + (1.f - p.beta1) * gi;
            const float vi = p.beta2 * vp[i] + (1.f - p.beta2) * gi * gi;
            mp[i] = mi, vp[i] = vi;
            w[i] = w[i] * decay - p.lr * (mi * inv_bc1) / (std::sqrt(vi * inv_bc2) + p.eps);
        }
    });
}

void scale(thread_pool& pool, const tensor& x, float s, const tensor& out) {
    const int64_t n = x.nelements();
    const float* xp = x.host<const float>();
    float* o = out.host<float>();
    pool.parallel_for(n, grain(1), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) o[i] = s * xp[i];
    });
}

void sum_sq(thread_pool& pool, const tensor& x, const tensor& out) {
    const int64_t n = x.nelements(), chunk = int64_t(1) << 16, n_chunks = (n + chunk - 1) / chunk;
    const float* xp = x.host<const float>();
    // Vector partial sums per chunk of 64K, added in double: ~1e-7 relative at any size.
    std::vector<double> part(static_cast<size_t>(std::max<int64_t>(n_chunks, 1)), 0.0);
    pool.parallel_for(n_chunks, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
            const int64_t i0 = c * chunk, len = std::min(chunk, n - i0);
            part[size_t(c)] = simd::dot(xp + i0, xp + i0, len);
        }
    });
    double total = 0;
    for (double s : part) total += s;
    out.host<float>()[0] = float(total);
}

}  // namespace tandem::cpu
