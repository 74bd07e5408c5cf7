// Checking one backend op against cpu_ref from hand-made host tensors (the GPU backends' own tests): host
// tensors from floats, ints or random quantized rows, placed in their own buffers at awkward or aligned
// offsets, the op run on cpu_ref and on the backend under test, the worst difference of the outputs.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "engine/quantize.h"

namespace tandem::test {

using ne4 = std::array<int64_t, 4>;

// ---- host tensors and their placement on a backend ----

struct host_tensor {
    dtype type = dtype::f32;
    ne4 ne{1, 1, 1, 1};
    std::vector<uint8_t> bytes;
};

inline int64_t count(const ne4& ne) { return ne[0] * ne[1] * ne[2] * ne[3]; }

inline host_tensor floats(dtype t, ne4 ne, const std::vector<float>& v) {
    host_tensor h{t, ne, {}};
    if (t == dtype::f32) {
        h.bytes.resize(v.size() * 4);
        std::memcpy(h.bytes.data(), v.data(), h.bytes.size());
    } else {
        h.bytes.resize(v.size() * 2);
        for (size_t i = 0; i < v.size(); ++i) {
            const uint16_t x = fp32_to_fp16(v[i]);
            std::memcpy(h.bytes.data() + 2 * i, &x, 2);
        }
    }
    return h;
}

inline host_tensor ints(ne4 ne, const std::vector<int32_t>& v) {
    host_tensor h{dtype::i32, ne, std::vector<uint8_t>(v.size() * 4)};
    std::memcpy(h.bytes.data(), v.data(), h.bytes.size());
    return h;
}

inline std::vector<float> to_floats(const host_tensor& h) {
    std::vector<float> v(size_t(count(h.ne)));
    for (size_t i = 0; i < v.size(); ++i) {
        if (h.type == dtype::f16) {
            uint16_t x;
            std::memcpy(&x, h.bytes.data() + 2 * i, 2);
            v[i] = fp16_to_fp32(x);
        } else if (h.type == dtype::i32) {
            int32_t x;
            std::memcpy(&x, h.bytes.data() + 4 * i, 4);
            v[i] = float(x);
        } else {
            std::memcpy(&v[i], h.bytes.data() + 4 * i, 4);
        }
    }
    return v;
}

class rng {
 public:
    explicit rng(uint64_t seed) : g_(seed) {}
    float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(g_); }
    int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(g_); }
    std::vector<float> floats(int64_t n, float lo = -1.f, float hi = 1.f) {
        std::vector<float> v(static_cast<size_t>(n));
        for (auto& x : v) x = uniform(lo, hi);
        return v;
    }
    host_tensor tensor(dtype t, ne4 ne, float lo = -1.f, float hi = 1.f) {
        return test::floats(t, ne, floats(count(ne), lo, hi));
    }
    std::mt19937_64& engine() { return g_; }

 private:
    std::mt19937_64 g_;
};

// Random [-1, 1] values quantized to a block type (q8_0 / q4_0), row by row.
inline host_tensor quantized(rng& r, dtype t, ne4 ne) {
    const auto v = r.floats(count(ne));
    const size_t rb = dtype_row_bytes(t, ne[0]);
    host_tensor h{t, ne, std::vector<uint8_t>(rb * size_t(ne[1] * ne[2] * ne[3]))};
    for (int64_t row = 0; row < ne[1] * ne[2] * ne[3]; ++row)
        quantize_row(t, v.data() + row * ne[0], h.bytes.data() + size_t(row) * rb, ne[0]);
    return h;
}

// Each tensor gets its own buffer at a non-zero offset: either awkward (not a multiple of 16 bytes; odd
// element offsets for f16), so a backend that ignores tensor::offset or assumes aligned bindings fails, or
// 16-byte aligned, which lets the kernels take their 4-element (texel) paths.
struct placed {
    std::unique_ptr<buffer> buf;
    tensor t;
};

inline placed place(backend& b, const host_tensor& h, size_t salt, bool aligned) {
    const size_t offset = aligned ? 32 + 16 * salt : h.type == dtype::f16 ? 34 + 4 * salt : 20 + 8 * salt;
    placed p;
    p.buf = b.alloc(offset + h.bytes.size() + 12);
    b.upload(*p.buf, offset, h.bytes.data(), h.bytes.size());
    p.t = tensor{p.buf.get(), offset, h.type, h.ne};
    return p;
}

inline host_tensor fetch(backend& b, const placed& p) {
    host_tensor h{p.t.type, p.t.ne, std::vector<uint8_t>(p.t.nbytes())};
    b.download(*p.buf, p.t.offset, h.bytes.data(), h.bytes.size());
    return h;
}

using op_fn = std::function<void(backend&, const std::vector<tensor>&)>;

// The worst |ref - dut| over the outputs (indices into the placements), +inf when one side has a NaN the other lacks.
inline double worst_difference(backend& ref, const std::vector<placed>& pr, backend& dut, const std::vector<placed>& pd,
                               const std::vector<int>& outputs) {
    double worst = 0;
    for (int o : outputs) {
        const auto a = to_floats(fetch(ref, pr[size_t(o)])), b = to_floats(fetch(dut, pd[size_t(o)]));
        for (size_t i = 0; i < a.size(); ++i) {
            if (std::isnan(b[i]) != std::isnan(a[i])) return INFINITY;
            if (!std::isnan(a[i]) && a[i] != b[i]) worst = std::max(worst, double(std::abs(a[i] - b[i])));
        }
    }
    return worst;
}

// Runs op on cpu_ref and on dut with copies of `args`, once with awkward and once with aligned placements;
// returns the worst |ref - dut| over the outputs (args indices), or +inf on a NaN mismatch.
inline double max_error(backend& dut, const std::vector<host_tensor>& args, const std::vector<int>& outputs, const op_fn& op) {
    auto ref = make_backend("cpu_ref");
    double worst = 0;
    for (bool aligned : {false, true}) {
        std::vector<placed> pr, pd;
        std::vector<tensor> tr, td;
        for (size_t i = 0; i < args.size(); ++i) {
            pr.push_back(place(*ref, args[i], i, aligned));
            pd.push_back(place(dut, args[i], i, aligned));
            tr.push_back(pr.back().t);
            td.push_back(pd.back().t);
        }
        op(*ref, tr);
        op(dut, td);
        dut.synchronize();
        worst = std::max(worst, worst_difference(*ref, pr, dut, pd, outputs));
    }
    return worst;
}

// Runs op on cpu_ref and on dut with args[i] placed at byte offsets[i]; the worst |ref - dut| over the outputs.
inline double max_error_at(backend& dut, const std::vector<host_tensor>& args, const std::vector<size_t>& offsets,
                    const std::vector<int>& outputs, const op_fn& op) {
    auto ref = make_backend("cpu_ref");
    std::vector<placed> pr, pd;
    std::vector<tensor> tr, td;
    for (size_t i = 0; i < args.size(); ++i) {
        for (auto* side : {&pr, &pd}) {
            backend& b = side == &pr ? *ref : dut;
            placed p;
            p.buf = b.alloc(offsets[i] + args[i].bytes.size() + 12);
            b.upload(*p.buf, offsets[i], args[i].bytes.data(), args[i].bytes.size());
            p.t = tensor{p.buf.get(), offsets[i], args[i].type, args[i].ne};
            (side == &pr ? tr : td).push_back(p.t);
            side->push_back(std::move(p));
        }
    }
    op(*ref, tr);
    op(dut, td);
    dut.synchronize();
    return worst_difference(*ref, pr, dut, pd, outputs);
}

}  // namespace tandem::test
