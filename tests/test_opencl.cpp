// The OpenCL backend on its own: every op against cpu_ref on a few seeded random shapes (odd sizes, both GEMV
// variants, both GEMM paths, f32/f16/q8_0/q4_0/q4_k/q6_k, a token tree plus a ragged two-session batch for attention),
// errors detected on the device, and the program cache (disk reuse, corrupt entries, compile errors naming file and
// line); models end to end are in test_opencl_e2e.cpp. SKIPPED, with the reason, where no OpenCL platform exists.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "engine/error.h"
#include "engine/model.h"
#include "engine/quantize.h"
#include "engine/session.h"
#include "tests/common/test_util.h"
#if TANDEM_WITH_OPENCL
#include "backends/opencl/opencl.h"
#endif

namespace tandem {
namespace {

#if !TANDEM_WITH_OPENCL
TEST(opencl, not_built) { GTEST_SKIP() << "this build has no OpenCL backend (TANDEM_OPENCL=OFF)"; }
#else

using test::scoped_env;

// make_backend("opencl"), or the reason there is none (no platform / no device): such tests are SKIPPED.
std::unique_ptr<backend> try_opencl(std::string& why, const std::string& name = "opencl") {
    try {
        return make_backend(name);
    } catch (const error& e) {
        if (e.status() != TANDEM_ERR_BACKEND) throw;
        why = e.what();
        return nullptr;
    }
}

#define TANDEM_OPENCL_OR_SKIP(var, ...)                          \
    std::string var##_why;                                       \
    auto var = try_opencl(var##_why __VA_OPT__(, ) __VA_ARGS__); \
    if (!var) GTEST_SKIP() << var##_why

// ---- running one op on cpu_ref and on OpenCL with identical inputs ----

// The OpenCL copy of every tensor sits at this byte offset in a larger buffer, so an ignored offset fails.
constexpr size_t k_view_offset = 256;

struct twin {
    std::unique_ptr<buffer> rbuf, dbuf;
    tensor r, d;  // the same tensor on cpu_ref and on the backend under test
};

struct harness {
    std::unique_ptr<backend> ref = make_backend("cpu_ref");
    backend& dut;
    std::mt19937_64 gen{test::test_seed()};

    explicit harness(backend& b) : dut(b) {}

    // The backend's copy sits at byte `offset` of its buffer.
    twin make(dtype t, std::array<int64_t, 4> ne, const void* data, size_t offset = k_view_offset) {
        twin w;
        const size_t bytes = dtype_row_bytes(t, ne[0]) * size_t(ne[1] * ne[2] * ne[3]);
        w.rbuf = ref->alloc(bytes);
        w.dbuf = dut.alloc(bytes + offset + k_view_offset);
        ref->upload(*w.rbuf, 0, data, bytes);
        dut.upload(*w.dbuf, offset, data, bytes);
        w.r = tensor{w.rbuf.get(), 0, t, ne};
        w.d = tensor{w.dbuf.get(), offset, t, ne};
        return w;
    }
    // Random [-1, 1] values quantized to a block type, row by row, at byte `offset`; with `spread`, each 32-element
    // sub-block scaled by 2^-5 .. 2 and shifted by up to +-that (so every 6-bit K-quant scale and min gets used).
    twin quantized(dtype t, std::array<int64_t, 4> ne, size_t offset, bool spread = false) {
        auto v = uniform(ne[0] * ne[1] * ne[2] * ne[3]);
        for (size_t i = 0; spread && i < v.size(); i += 32) {
            const float scale = std::ldexp(1.f, int(gen() % 7) - 5), shift = uniform(1)[0] * scale;
            for (size_t j = i; j < i + 32; ++j) v[j] = v[j] * scale + shift;
        }
        const size_t rb = dtype_row_bytes(t, ne[0]);
        std::vector<uint8_t> bytes(rb * size_t(ne[1] * ne[2] * ne[3]));
        for (int64_t row = 0; row < ne[1] * ne[2] * ne[3]; ++row)
            quantize_row(t, v.data() + row * ne[0], bytes.data() + size_t(row) * rb, ne[0]);
        return make(t, ne, bytes.data(), offset);
    }
    std::vector<float> uniform(int64_t n, float lo = -1.f, float hi = 1.f) {
        std::uniform_real_distribution<float> u(lo, hi);
        std::vector<float> v(static_cast<size_t>(n));
        for (auto& x : v) x = u(gen);
        return v;
    }
    // Random values of type t (f32 or f16) in [lo, hi].
    twin random(dtype t, std::array<int64_t, 4> ne, float lo = -1.f, float hi = 1.f) {
        const auto v = uniform(ne[0] * ne[1] * ne[2] * ne[3], lo, hi);
        if (t == dtype::f32) return make(t, ne, v.data());
        std::vector<uint16_t> h(v.size());
        for (size_t i = 0; i < v.size(); ++i) h[i] = fp32_to_fp16(v[i]);
        return make(t, ne, h.data());
    }
    twin ints(std::array<int64_t, 4> ne, const std::vector<int32_t>& v) { return make(dtype::i32, ne, v.data()); }
    // An output every element of which the op must write: all bytes 0xff (NaN as f32/f16, -1 as i32).
    twin output(dtype t, std::array<int64_t, 4> ne) {
        std::vector<uint8_t> b(dtype_row_bytes(t, ne[0]) * size_t(ne[1] * ne[2] * ne[3]), 0xff);
        return make(t, ne, b.data());
    }
    template <typename T>
    std::pair<std::vector<T>, std::vector<T> > fetch(const twin& w) {
        std::vector<T> a(w.r.nbytes() / sizeof(T)), b(a.size());
        ref->download(*w.rbuf, 0, a.data(), w.r.nbytes());
        dut.download(*w.dbuf, k_view_offset, b.data(), w.d.nbytes());
        return {a, b};
    }
    // Compares f32 (or, for caches, f16) outputs: no NaN, NMSE and the largest absolute error within bounds.
    void expect_close(const twin& w, double max_nmse, double max_abs, const std::string& what) {
        std::vector<float> a, b;
        if (w.r.type == dtype::f16) {
            auto [ha, hb] = fetch<uint16_t>(w);
            for (size_t i = 0; i < ha.size(); ++i) a.push_back(fp16_to_fp32(ha[i])), b.push_back(fp16_to_fp32(hb[i]));
        } else {
            std::tie(a, b) = fetch<float>(w);
        }
        double err = 0, norm = 0, worst = 0;
        size_t worst_i = 0;
        for (size_t i = 0; i < a.size(); ++i) {
            ASSERT_FALSE(std::isnan(b[i])) << what << ": NaN at " << i << " (seed " << test::test_seed() << ")";
            const double d = std::fabs(double(a[i]) - double(b[i]));
            err += d * d, norm += double(a[i]) * double(a[i]);
            if (d > worst) worst = d, worst_i = i;
        }
        const double nmse = norm > 0 ? err / norm : err;
        EXPECT_LE(nmse, max_nmse) << what << " (seed " << test::test_seed() << ")";
        EXPECT_LE(worst, max_abs) << what << ": element " << worst_i << " is " << b[worst_i] << ", cpu_ref has "
                                  << a[worst_i] << " (seed " << test::test_seed() << ")";
    }
    void expect_equal_ints(const twin& w, const std::string& what) {
        auto [a, b] = fetch<int32_t>(w);
        EXPECT_EQ(a, b) << what << " (seed " << test::test_seed() << ")";
    }
};

std::string shape(std::initializer_list<int64_t> dims) {
    std::string s;
    for (auto d : dims) {
        if (!s.empty()) s += 'x';
        s += std::to_string(d);
    }
    return s;
}

const int64_t k_odd_sizes[] = {1, 5, 7, 33, 4097};

// ---- (a) every op against cpu_ref ----

TEST(opencl_ops, get_rows_rms_norm_elementwise_softmax_argmax) {
    TANDEM_OPENCL_OR_SKIP(be);
    harness h(*be);
    for (int64_t k : k_odd_sizes) {
        for (dtype t : {dtype::f32, dtype::f16}) {
            auto table = h.random(t, {k, 7, 1, 1});
            auto ids = h.ints({4, 1, 1, 1}, {3, 0, 6, 3});
            auto out = h.output(dtype::f32, {k, 4, 1, 1});
            h.ref->get_rows(table.r, ids.r, out.r), be->get_rows(table.d, ids.d, out.d);
            // A copy (f16 -> f32 is exact): bit-identical.
            h.expect_close(out, 0, 0, "get_rows " + std::string(dtype_name(t)) + " K=" + std::to_string(k));
        }
        const int64_t m = 5;
        auto x = h.random(dtype::f32, {k, m, 1, 1}, -2.f, 2.f);
        auto w = h.random(dtype::f32, {k, 1, 1, 1});
        auto out = h.output(dtype::f32, {k, m, 1, 1});
        h.ref->rms_norm(x.r, w.r, 1e-5f, out.r), be->rms_norm(x.d, w.d, 1e-5f, out.d);
        // The sum of squares in another order: relative error ~K*eps at worst, outputs are O(1).
        h.expect_close(out, 1e-10, 1e-5, "rms_norm K=" + std::to_string(k));
        h.ref->rms_norm(x.r, w.r, 1e-5f, x.r), be->rms_norm(x.d, w.d, 1e-5f, x.d);  // in place
        h.expect_close(x, 1e-10, 1e-5, "rms_norm in place K=" + std::to_string(k));

        auto g = h.random(dtype::f32, {k, 3, 1, 1}, -6.f, 6.f), u = h.random(dtype::f32, {k, 3, 1, 1});
        auto o = h.output(dtype::f32, {k, 3, 1, 1});
        h.ref->swiglu(g.r, u.r, o.r), be->swiglu(g.d, u.d, o.d);
        // One exp per element: a few ulps.
        h.expect_close(o, 1e-12, 1e-6, "swiglu n=" + std::to_string(3 * k));
        h.ref->add(g.r, u.r, g.r), be->add(g.d, u.d, g.d);  // in place, exact
        h.expect_close(g, 0, 0, "add n=" + std::to_string(3 * k));

        auto s = h.random(dtype::f32, {k, 3, 1, 1}, -8.f, 8.f);
        auto so = h.output(dtype::f32, {k, 3, 1, 1});
        h.ref->softmax(s.r, so.r), be->softmax(s.d, so.d);
        // Probabilities <= 1; exp ulps and a differently ordered normaliser.
        h.expect_close(so, 1e-10, 1e-6, "softmax K=" + std::to_string(k));

        // argmax with a planted tie: the first index must win.
        auto v = h.uniform(k * 3);
        for (int64_t row = 0; row < 3; ++row) {
            v[size_t(row * k + (row * 7) % k)] = 5.f;
            v[size_t(row * k + k - 1)] = 5.f;
        }
        auto ax = h.make(dtype::f32, {k, 3, 1, 1}, v.data());
        auto ao = h.output(dtype::i32, {3, 1, 1, 1});
        h.ref->argmax(ax.r, ao.r), be->argmax(ax.d, ao.d);
        h.expect_equal_ints(ao, "argmax K=" + std::to_string(k));
    }
}

TEST(opencl_ops, rope) {
    TANDEM_OPENCL_OR_SKIP(be);
    harness h(*be);
    for (int64_t d : {8, 64}) {
        for (int32_t n_rot : {int32_t(d), int32_t(d / 2)}) {
            const int64_t heads = 3, m = 5;
            auto x = h.random(dtype::f32, {d, heads, m, 1});
            auto pos = h.ints({m, 1, 1, 1}, {0, 1, 17, 300, 2047});
            const rope_params p{n_rot, 10000.f};
            h.ref->rope(x.r, pos.r, p), be->rope(x.d, pos.d, p);
            // Bit-identical angles (host-computed frequencies); cos/sin of OpenCL are within 4 ulp.
            h.expect_close(x, 1e-11, 1e-5, "rope D=" + std::to_string(d) + " n_rot=" + std::to_string(n_rot));
        }
    }
}

// Matrix products under every variant: the backend is created after setting the variant's env override.
void check_matmul(const std::string& gemv, const std::string& gemm, bool matrix_shapes, const std::string& mm = "dot") {
    scoped_env e1("TANDEM_OPENCL_GEMV", gemv), e2("TANDEM_OPENCL_GEMM", gemm), e3("TANDEM_OPENCL_MM", mm);
    TANDEM_OPENCL_OR_SKIP(be);
    ASSERT_EQ(opencl_gemv_variant(*be), gemv);
    ASSERT_EQ(opencl_gemm_variant(*be), gemm);
    harness h(*be);
    // {K, N, M}: odd sizes, tile edges (32-wide tiles: 31/32/33, 64), M from decode (1) to prefill.
    std::vector<std::array<int64_t, 3> > shapes;
    if (!matrix_shapes) {
        for (int64_t k : k_odd_sizes) shapes.push_back({k, 7, 1});
        shapes.insert(shapes.end(), {{33, 5, 2}, {64, 33, 3}, {7, 1, 5}, {4096, 17, 1}});
    } else {
        shapes = {{1, 1, 8}, {5, 7, 9}, {33, 31, 32}, {64, 32, 33}, {7, 65, 64}, {4097, 5, 8}, {96, 33, 130}};
    }
    for (dtype t : {dtype::f32, dtype::f16}) {
        for (const auto& [k, n, m] : shapes) {
            auto w = h.random(t, {k, n, 1, 1});
            auto x = h.random(dtype::f32, {k, m, 1, 1});
            auto out = h.output(dtype::f32, {n, m, 1, 1});
            h.ref->matmul(w.r, x.r, out.r), be->matmul(w.d, x.d, out.d);
            // Float sums in another order (and FMA). The sequential oracle's own rounding error grows like
            // K * eps * |partial sums| with |out| ~ sqrt(K / 9): 5e-8 * K bounds it (2e-4 at K = 4097, where
            // outputs reach ~60); a wrong or missing term is off by O(0.1) or more.
            h.expect_close(out, 1e-10, 1e-6 + 5e-8 * double(k),
                           "matmul " + std::string(dtype_name(t)) + " gemv=" + gemv + " gemm=" + gemm + " mm=" + mm +
                               " KxNxM=" + shape({k, n, m}));
        }
    }
}

TEST(opencl_ops, matmul_gemv_row) { check_matmul("row", "tandem", false); }
TEST(opencl_ops, matmul_gemv_wg) { check_matmul("wg", "tandem", false); }
TEST(opencl_ops, matmul_gemm_tandem_dot) { check_matmul("row", "tandem", true, "dot"); }
TEST(opencl_ops, matmul_gemm_tandem_tiled) { check_matmul("row", "tandem", true, "tiled"); }
TEST(opencl_ops, matmul_gemm_clblast) { check_matmul("row", "clblast", true); }

// Every finite f16 class (zeros, subnormals, normals up to the largest) through the 8-wide integer conversion
// of the GEMV and GEMM kernels: with one-hot x rows, out[m][n] is exactly w[n][hot(m)].
TEST(opencl_ops, matmul_f16_special_values_exact) {
    TANDEM_OPENCL_OR_SKIP(be);
    harness h(*be);
    const uint16_t specials[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x83ff, 0x0400, 0x8400,
                                 0x3c00, 0xbc00, 0x3555, 0x7bff, 0xfbff, 0x1234, 0x0200, 0xc001};
    const int64_t k = 16, n = 16;
    std::vector<uint16_t> w(size_t(k * n));
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c) w[size_t(r * k + c)] = specials[size_t((r + c) % 16)];
    for (int64_t m : {1, 9}) {  // the GEMV and the GEMM path
        std::vector<float> x(size_t(k * m), 0.f);
        for (int64_t r = 0; r < m; ++r) x[size_t(r * k + (r * 5) % k)] = 1.f;
        auto tw = h.make(dtype::f16, {k, n, 1, 1}, w.data());
        auto tx = h.make(dtype::f32, {k, m, 1, 1}, x.data());
        auto out = h.output(dtype::f32, {n, m, 1, 1});
        h.ref->matmul(tw.r, tx.r, out.r), be->matmul(tw.d, tx.d, out.d);
        h.expect_close(out, 0, 0, "matmul f16 specials M=" + std::to_string(m));
    }
}

// Quantized weights under every variant (GEMV row / wg, GEMM dot / tiled; CLBlast has no quantized GEMM), with
// blocks at byte offsets that are not multiples of 4 or 16, and get_rows from quantized tables.
void check_quant_matmul(const std::string& gemv, const std::string& mm) {
    scoped_env e1("TANDEM_OPENCL_GEMV", gemv), e2("TANDEM_OPENCL_MM", mm);
    TANDEM_OPENCL_OR_SKIP(be);
    harness h(*be);
    // {K, N, M}: one block, blocks past the tile and work-group widths, long rows; M from decode to prefill.
    const std::vector<std::array<int64_t, 3> > shapes = {{32, 7, 1},    {96, 33, 3},    {288, 65, 5}, {4096, 17, 1},
                                                         {4160, 5, 2},  {256, 250, 8},  {64, 33, 9},  {512, 31, 130},
                                                         {16384, 3, 1}, {128, 4099, 17}};
    size_t i = 0;
    for (dtype t : {dtype::q8_0, dtype::q4_0}) {
        for (const auto& [k, n, m] : shapes) {
            const size_t offset = k_view_offset + 2 * (i++ % 8);  // 256 .. 270: every even start in 16 bytes
            auto w = h.quantized(t, {k, n, 1, 1}, offset);
            auto x = h.random(dtype::f32, {k, m, 1, 1});
            auto out = h.output(dtype::f32, {n, m, 1, 1});
            h.ref->matmul(w.r, x.r, out.r), be->matmul(w.d, x.d, out.d);
            // d * q is exact in f32, so only the summation order differs from cpu_ref, whose sequential sum errs by
            // ~ 3e-8 * K at most for the largest outputs (tests/backend_ops/cases_quant.cpp); a swapped nibble pair
            // or a misread scale moves outputs by ~ 0.1 * sqrt(K). NMSE only with enough outputs: over a handful it
            // measures how close the reference happens to be to zero.
            h.expect_close(out, n * m >= 64 ? 1e-10 : 1.0, 5e-7 * double(k) + 1e-6,
                           "matmul " + std::string(dtype_name(t)) + " gemv=" + gemv + " mm=" + mm +
                               " KxNxM=" + shape({k, n, m}) + " at byte " + std::to_string(offset));
        }
        for (int64_t k : {32, 96, 4096}) {
            auto table = h.quantized(t, {k, 7, 1, 1}, k_view_offset + 6);
            auto ids = h.ints({4, 1, 1, 1}, {6, 0, 3, 6});
            auto out = h.output(dtype::f32, {k, 4, 1, 1});
            h.ref->get_rows(table.r, ids.r, out.r), be->get_rows(table.d, ids.d, out.d);
            h.expect_close(out, 0, 0, "get_rows " + std::string(dtype_name(t)) + " K=" + std::to_string(k));  // exact
        }
    }
}

TEST(opencl_ops, matmul_quant_gemv_row_gemm_dot) { check_quant_matmul("row", "dot"); }
TEST(opencl_ops, matmul_quant_gemv_wg_gemm_tiled) { check_quant_matmul("wg", "tiled"); }

// The GEMV outputs of prepared and unprepared Q4_0 / Q8_0 weights at a few shapes, with env `var` set to `mode`
// (and the "row" GEMV of CPU devices), each checked against cpu_ref; empty without an OpenCL device.
std::vector<std::vector<float> > gemv_results(const char* var, const char* mode) {
    const std::vector<std::array<int64_t, 3> > shapes = {{4096, 37, 1}, {160, 33, 3}, {8192, 18, 1}, {4096, 9, 7}};
    std::vector<std::vector<float> > results;
    scoped_env e1(var, mode), e2("TANDEM_OPENCL_GEMV", "row");
    std::string why;
    auto be = try_opencl(why);
    if (!be) return results;
    harness h(*be);
    for (dtype t : {dtype::q4_0, dtype::q8_0}) {
        for (bool prepared : {true, false}) {
            for (const auto& [k, n, m] : shapes) {
                auto w = h.quantized(t, {k, n, 1, 1}, k_view_offset);
                auto x = h.random(dtype::f32, {k, m, 1, 1});
                auto out = h.output(dtype::f32, {n, m, 1, 1});
                if (prepared) be->prepare_weight(w.d);
                h.ref->matmul(w.r, x.r, out.r), be->matmul(w.d, x.d, out.d);
                const std::string what = std::string(dtype_name(t)) + (prepared ? " prepared " : " ") + var + "=" +
                                         mode + " KxNxM=" + shape({k, n, m});
                // Prepared Q4_0 multiplies Q8-quantized activations (kernels/mul_mv_q4_0_g16.cl): the bound of
                // tests/backend_ops/cases_quant.cpp for them; the exact kernels: summation order only.
                const bool q8_acts = prepared && t == dtype::q4_0;
                h.expect_close(out, q8_acts ? 1e-3 : 1e-10,
                               q8_acts ? 1.3e-2 * std::sqrt(double(k)) + 1e-5 : 5e-7 * double(k) + 1e-6, what);
                results.push_back(h.fetch<float>(out).second);
            }
        }
    }
    return results;
}

// Every value of `var` in `modes` gives the same bits as the first; any other value is refused naming `var`.
void expect_same_bits(const char* var, std::initializer_list<const char*> modes) {
    TANDEM_OPENCL_OR_SKIP(probe);
    probe.reset();
    const auto first = gemv_results(var, *modes.begin());
    ASSERT_EQ(first.size(), 2 * 2 * 4u);
    for (const char* mode : modes) {
        const auto other = gemv_results(var, mode);
        ASSERT_EQ(other.size(), first.size()) << mode;
        for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(other[i], first[i]) << var << "=" << mode << " case " << i;
    }
    scoped_env bad(var, "maybe");
    std::string why;
    try {
        try_opencl(why);
        ADD_FAILURE() << var << "=maybe was accepted";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(e.what()).find(var), std::string::npos) << e.what();
    }
}

// The GEMV kernels' weight prefetch (TANDEM_OPENCL_PREFETCH, on by default for PoCL) is a hint only: the build
// without it is what GPUs compile.
TEST(opencl_ops, gemv_prefetch_changes_no_result) { expect_same_bits("TANDEM_OPENCL_PREFETCH", {"on", "off"}); }

// The g16 Q4_0 GEMV's x86 builtins (vpdpwssd with VNNI, vpmaddwd / vpsrlw on AVX-512BW, vpmaddwd on AVX2) and its
// portable OpenCL C compute the same integer sums, so the same bits (on a device whose compiler targets none of
// them, all are the portable code and the test checks only that). vnni only where the CPU has it.
TEST(opencl_ops, gemv_g16_x86_paths_agree) {
#if defined(__x86_64__) || defined(__i386__)
    if (__builtin_cpu_supports("avx512vnni"))
        return expect_same_bits("TANDEM_OPENCL_X86", {"vnni", "avx512", "avx2", "off"});
#endif
    expect_same_bits("TANDEM_OPENCL_X86", {"avx512", "avx2", "off"});
}

// Q4_K / Q6_K weights (spread sub-block scales) under every variant, super-blocks at every even byte offset within 16.
// {K, N, M}: one and two super-blocks and long rows; N around the tiles (1, 31, 33, 65); M = 1, 2, 7 (GEMV passes of
// 4), 8 (the first matrix-matrix shape), 33, 64, 65, 130 (m tiles of 32 and the dot kernel's 4). Then exact get_rows.
void check_kquant_matmul(const std::string& gemv, const std::string& mm) {
    scoped_env e1("TANDEM_OPENCL_GEMV", gemv), e2("TANDEM_OPENCL_MM", mm);
    TANDEM_OPENCL_OR_SKIP(be);
    harness h(*be);
    const std::vector<std::array<int64_t, 3> > shapes = {{256, 7, 1},   {512, 33, 2},   {256, 65, 7}, {4096, 31, 1},
                                                         {4096, 5, 2},  {256, 31, 8},   {512, 1, 33}, {256, 33, 64},
                                                         {768, 65, 65}, {512, 34, 130}, {4096, 9, 9}, {256, 130, 3}};
    size_t i = 0;
    for (dtype t : {dtype::q4_k, dtype::q6_k}) {
        for (const auto& [k, n, m] : shapes) {
            const size_t offset = k_view_offset + 2 * (i++ % 8);
            auto w = h.quantized(t, {k, n, 1, 1}, offset, true);
            auto x = h.random(dtype::f32, {k, m, 1, 1});
            auto out = h.output(dtype::f32, {n, m, 1, 1});
            h.ref->matmul(w.r, x.r, out.r), be->matmul(w.d, x.d, out.d);
            // The decoded weights equal cpu_ref's bit for bit (kernels/kquant.cl), so only the summation order
            // differs, as for Q8_0 / Q4_0 above (weights here reach 4 in magnitude: a 3x wider bound); a
            // misplaced nibble, high-bit pair or scale moves outputs by ~0.1 * sqrt(K).
            h.expect_close(out, n * m >= 64 ? 1e-10 : 1.0, 1.5e-6 * double(k) + 1e-6,
                           "matmul " + std::string(dtype_name(t)) + " gemv=" + gemv + " mm=" + mm +
                               " KxNxM=" + shape({k, n, m}) + " at byte " + std::to_string(offset));
        }
        for (int64_t k : {256, 768, 4096}) {
            auto table = h.quantized(t, {k, 7, 1, 1}, k_view_offset + 2 * (i++ % 8), true);
            auto ids = h.ints({5, 1, 1, 1}, {6, 0, 3, 6, 1});
            auto out = h.output(dtype::f32, {k, 5, 1, 1});
            h.ref->get_rows(table.r, ids.r, out.r), be->get_rows(table.d, ids.d, out.d);
            h.expect_close(out, 0, 0, "get_rows " + std::string(dtype_name(t)) + " K=" + std::to_string(k));
        }
    }
}

TEST(opencl_ops, matmul_kquant_gemv_row_gemm_dot) { check_kquant_matmul("row", "dot"); }
TEST(opencl_ops, matmul_kquant_gemv_wg_gemm_tiled) { check_kquant_matmul("wg", "tiled"); }

TEST(opencl_ops, attention_tree_and_ragged_batch) {
    TANDEM_OPENCL_OR_SKIP(be);
    harness h(*be);
    for (dtype cache : {dtype::f32, dtype::f16}) {
        for (auto [d, hq, hkv] : {std::array<int64_t, 3>{8, 4, 2}, {64, 4, 4}, {33, 6, 2}}) {
            // Session A: a causal chain of 3 new rows after 17 committed slots at base 0. Session B: a random
            // 7-node token tree after 5 committed slots at base 40 (parents are batch rows). Then walk-only entries.
            std::vector<int32_t> meta, slots;
            for (int32_t i = 0; i < 3; ++i) {
                meta.insert(meta.end(), {0, 17 + i + 1, -1, -1});
                slots.push_back(17 + i);
            }
            const int32_t row0 = 3;
            for (int32_t j = 0; j < 7; ++j) {
                const int32_t parent = j == 0 ? -1 : int32_t(std::uniform_int_distribution<int>(-1, j - 1)(h.gen));
                meta.insert(meta.end(), {40, 5, row0 + j, parent < 0 ? -1 : row0 + parent});
                slots.push_back(45 + j);
            }
            meta.insert(meta.end(), {0, 0, row0 + 6, -1});  // a row that sees only node 6's path
            slots.push_back(60);
            // A row that sees 4 slots and then a walk through three walk-only entries (tokens already in the
            // cache: meta and slots have T = m + 3 entries, q only m rows).
            const int32_t walk0 = int32_t(slots.size()) + 1;
            meta.insert(meta.end(), {0, 4, walk0, -1});
            slots.push_back(61);
            const int64_t m = int64_t(slots.size()), s = 64;
            meta.insert(meta.end(), {0, 0, -1, walk0 + 1, 0, 0, -1, walk0 + 2, 0, 0, -1, -1});
            slots.insert(slots.end(), {30, 31, 32});
            const int64_t t_entries = int64_t(slots.size());
            auto q = h.random(dtype::f32, {d, hq, m, 1}, -2.f, 2.f);
            auto kc = h.random(cache, {d * hkv, s, 1, 1}), vc = h.random(cache, {d * hkv, s, 1, 1});
            auto mt = h.ints({4, t_entries, 1, 1}, meta), sl = h.ints({t_entries, 1, 1, 1}, slots);
            auto out = h.output(dtype::f32, {d, hq, m, 1});
            const attention_params p{1.f / std::sqrt(float(d))};
            h.ref->attention(q.r, kc.r, vc.r, mt.r, sl.r, p, out.r);
            be->attention(q.d, kc.d, vc.d, mt.d, sl.d, p, out.d);
            // Convex combinations of values in [-1, 1]: online vs two-pass softmax differ by float ulps (~1e-6);
            // a missing or extra slot moves an output by > 1e-3.
            h.expect_close(out, 1e-10, 2e-5,
                           "attention " + std::string(dtype_name(cache)) + " D=" + std::to_string(d) +
                               " Hq=" + std::to_string(hq) + " Hkv=" + std::to_string(hkv));
        }
    }
}

TEST(opencl_ops, kv_write_and_kv_copy) {
    TANDEM_OPENCL_OR_SKIP(be);
    harness h(*be);
    for (dtype t : {dtype::f32, dtype::f16}) {
        for (int64_t k : {5, 64, 33}) {
            auto cache = h.random(t, {k, 9, 1, 1});
            auto src = h.random(dtype::f32, {k, 3, 1, 1}, -3.f, 3.f);
            auto slots = h.ints({3, 1, 1, 1}, {8, 0, 4});
            h.ref->kv_write(src.r, cache.r, slots.r), be->kv_write(src.d, cache.d, slots.d);
            // A store (f16 rounding is round-to-nearest-even on both): bit-identical.
            h.expect_close(cache, 0, 0, "kv_write " + std::string(dtype_name(t)) + " K=" + std::to_string(k));
            // Overlapping shift: 3->2, 4->3, 5->4 is only right when every read precedes every write.
            auto from = h.ints({4, 1, 1, 1}, {3, 4, 5, 8}), to = h.ints({4, 1, 1, 1}, {2, 3, 4, 0});
            h.ref->kv_copy(cache.r, from.r, to.r), be->kv_copy(cache.d, from.d, to.d);
            h.expect_close(cache, 0, 0, "kv_copy " + std::string(dtype_name(t)) + " K=" + std::to_string(k));
        }
    }
}

TEST(opencl_ops, bad_indices_are_reported_not_read) {
    TANDEM_OPENCL_OR_SKIP(be);
    harness h(*be);
    auto table = h.random(dtype::f32, {5, 3, 1, 1});
    auto ids = h.ints({2, 1, 1, 1}, {1, 3});
    auto out = h.output(dtype::f32, {5, 2, 1, 1});
    be->get_rows(table.d, ids.d, out.d);
    EXPECT_THROW(be->synchronize(), error);
    be->synchronize();  // the error is reported once; the backend stays usable
    auto cache = h.random(dtype::f32, {5, 4, 1, 1});
    auto slots = h.ints({2, 1, 1, 1}, {0, 4});
    be->kv_write(table.d.rows(0, 2), cache.d, slots.d);
    std::vector<float> host(5);
    EXPECT_THROW(be->download(*out.dbuf, 0, host.data(), 20), error);
}

// ---- (b) the program cache ----

class temp_dir {
 public:
    temp_dir() {
        path_ = std::filesystem::temp_directory_path() /
                ("tandem_ocl_cache_" + std::to_string(::getpid()) + "_" + std::to_string(std::random_device{}()));
        std::filesystem::create_directories(path_);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }

 private:
    std::filesystem::path path_;
};

// One add through the backend (compiles kernels/elementwise.cl), checked against the obvious result.
void run_add(backend& be) {
    const float a[3] = {1, 2, 3}, b[3] = {10, 20, 30};
    auto buf = be.alloc(36);
    be.upload(*buf, 0, a, 12);
    be.upload(*buf, 12, b, 12);
    const tensor ta{buf.get(), 0, dtype::f32, {3, 1, 1, 1}}, tb{buf.get(), 12, dtype::f32, {3, 1, 1, 1}},
        to{buf.get(), 24, dtype::f32, {3, 1, 1, 1}};
    be.add(ta, tb, to);
    float got[3];
    be.download(*buf, 24, got, 12);
    EXPECT_EQ(got[0], 11.f);
    EXPECT_EQ(got[2], 33.f);
}

TEST(opencl_cache, second_instance_loads_binaries_and_corrupt_entries_rebuild) {
    temp_dir dir;
    scoped_env env("TANDEM_CACHE_DIR", dir.path().string());
    TANDEM_OPENCL_OR_SKIP(first);
    run_add(*first);
    EXPECT_EQ(opencl_stats(*first).built_from_source, 1);
    EXPECT_EQ(opencl_stats(*first).loaded_from_disk, 0);
    int files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
        EXPECT_EQ(e.path().extension(), ".clbin") << "a temporary file was left behind: " << e.path();
        ++files;
    }
    EXPECT_EQ(files, 1);

    auto second = make_backend("opencl");
    run_add(*second);
    EXPECT_EQ(opencl_stats(*second).built_from_source, 0);
    EXPECT_EQ(opencl_stats(*second).loaded_from_disk, 1);

    // Corrupt every entry (flip bytes in the payload, then truncate another copy): a rebuild, not a failure.
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
        std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(40);
        f.write("garbage!", 8);
    }
    auto third = make_backend("opencl");
    run_add(*third);
    EXPECT_EQ(opencl_stats(*third).disk_rejected, 1);
    EXPECT_EQ(opencl_stats(*third).built_from_source, 1);
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) std::filesystem::resize_file(e.path(), 20);
    auto fourth = make_backend("opencl");
    run_add(*fourth);
    EXPECT_EQ(opencl_stats(*fourth).disk_rejected, 1);
    EXPECT_EQ(opencl_stats(*fourth).built_from_source, 1);
}

TEST(opencl_cache, unusable_cache_directory_is_not_an_error) {
    temp_dir dir;
    const auto file = dir.path() / "not_a_directory";
    std::ofstream(file) << "x";
    scoped_env env("TANDEM_CACHE_DIR", (file / "sub").string());
    TANDEM_OPENCL_OR_SKIP(be);
    run_add(*be);
    EXPECT_EQ(opencl_stats(*be).built_from_source, 1);
}

TEST(opencl_cache, compile_error_names_file_line_and_build_log) {
    temp_dir dir;
    scoped_env env("TANDEM_CACHE_DIR", dir.path().string());
    TANDEM_OPENCL_OR_SKIP(be);
    const std::string source =
        "__kernel void broken(__global float* x) {\n"
        "    x[0] = 1.f;\n"
        "    x[1] = no_such_variable;\n"
        "}\n";
    try {
        opencl_build_for_test(*be, "broken_for_test.cl", source);
        FAIL() << "a kernel with an undeclared identifier compiled";
    } catch (const error& e) {
        const std::string msg = e.what();
        EXPECT_EQ(e.status(), TANDEM_ERR_BACKEND);
        EXPECT_NE(msg.find("kernels/broken_for_test.cl:3"), std::string::npos) << msg;
        EXPECT_NE(msg.find("no_such_variable"), std::string::npos) << "no build log in: " << msg;
    }
}

TEST(opencl_devices, report_and_selection) {
    const std::string report = opencl_devices_report();
    EXPECT_FALSE(report.empty());
    TANDEM_OPENCL_OR_SKIP(be);
    EXPECT_NE(report.find("0:0"), std::string::npos) << report;
    EXPECT_NE(report.find("compute units"), std::string::npos) << report;
    EXPECT_NO_THROW(make_backend("opencl:0:0"));
    try {
        make_backend("opencl:no-such-device-name");
        FAIL() << "an unknown device name was accepted";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_BACKEND);
        EXPECT_NE(std::string(e.what()).find("0:0"), std::string::npos) << "the message should list the devices";
    }
}

// ---- performance sanity (a report, not a test: run with --gtest_also_run_disabled_tests) ----

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median seconds of one call of f (after `warm` untimed calls); synchronises around each timed call.
double time_op(backend& be, int warm, int reps, const std::function<void()>& f) {
    for (int i = 0; i < warm; ++i) f();
    be.synchronize();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        be.synchronize();
        t.push_back(seconds_since(t0));
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// The host's single-thread read bandwidth over 256 MiB (GB/s), the yardstick for the GEMV figures.
double host_read_gbps() {
    std::vector<float> v(size_t(64) << 20, 1.f);
    double best = 0;
    for (int r = 0; r < 5; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        float s[8] = {};
        for (size_t i = 0; i < v.size(); i += 8)
            for (int j = 0; j < 8; ++j) s[j] += v[i + size_t(j)];
        const double dt = seconds_since(t0);
        volatile float sink = s[0] + s[7];
        (void)sink;
        best = std::max(best, double(v.size()) * 4 / dt / 1e9);
    }
    return best;
}

// n rows of k weights as benchmark data: f32/f16 bit patterns of finite values, or random quant bytes under a
// fixed finite scale (0.01) for the block types (every fp16 field: d; Q4_K's d and dmin; Q6_K's d at byte 208).
std::vector<uint8_t> bench_weights(dtype t, int64_t k, int64_t n, std::mt19937_64& gen) {
    std::vector<uint8_t> host(dtype_row_bytes(t, k) * size_t(n));
    if (t == dtype::f32 || t == dtype::f16) {
        for (size_t i = 0; i < host.size(); i += 2) host[i] = uint8_t(gen()), host[i + 1] = 0x3c;  // finite values
        return host;
    }
    for (auto& b : host) b = uint8_t(gen());
    const size_t bb = dtype_row_bytes(t, dtype_info(uint32_t(t))->block_size);
    const uint16_t d = fp32_to_fp16(0.01f);
    const std::vector<size_t> at =
        t == dtype::q4_k ? std::vector<size_t>{0, 2} : std::vector<size_t>{t == dtype::q6_k ? 208u : 0u};
    for (size_t i = 0; i < host.size(); i += bb)
        for (size_t a : at) std::memcpy(&host[i + a], &d, 2);
    return host;
}

TEST(opencl_perf, DISABLED_gemv_gemm_report) {
    TANDEM_OPENCL_OR_SKIP(probe);
    probe.reset();
    const double host_gbs = host_read_gbps();
    std::printf("host read bandwidth (1 thread, 256 MiB): %.1f GB/s\n", host_gbs);
    std::mt19937_64 gen(test::test_seed());
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (const char* gemv : {"row", "wg"}) {
        scoped_env e("TANDEM_OPENCL_GEMV", gemv);
        auto be = make_backend("opencl");
        for (auto [k, n] : {std::pair<int64_t, int64_t>{4096, 4096}, {4096, 11008}}) {
            for (dtype t : {dtype::f32, dtype::f16, dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k}) {
                const size_t wbytes = dtype_row_bytes(t, k) * size_t(n);
                const std::vector<uint8_t> host = bench_weights(t, k, n, gen);
                auto wb = be->wrap_host(host.data(), wbytes);
                auto xb = be->alloc(size_t(k) * 4), ob = be->alloc(size_t(n) * 4);
                const tensor w{wb.get(), 0, t, {k, n, 1, 1}}, x{xb.get(), 0, dtype::f32, {k, 1, 1, 1}},
                    o{ob.get(), 0, dtype::f32, {n, 1, 1, 1}};
                const double s = time_op(*be, 3, 15, [&] { be->matmul(w, x, o); });
                std::printf("GEMV %-3s %-4s N=%lld K=%lld: %8.1f us  %6.1f GB/s of weights (%.2f x host read)\n", gemv,
                            std::string(dtype_name(t)).c_str(), (long long)n, (long long)k, s * 1e6,
                            double(wbytes) / s / 1e9, double(wbytes) / s / 1e9 / host_gbs);
            }
        }
    }
    for (auto [m, n, k] : {std::array<int64_t, 3>{512, 1024, 1024}, {512, 4096, 4096}}) {
        for (const char* gemm : {"tandem", "clblast"}) {
            scoped_env e("TANDEM_OPENCL_GEMM", gemm);
            auto be = make_backend("opencl");
            std::vector<float> hw(size_t(k * n)), hx(size_t(k * m));
            for (auto& v : hw) v = u(gen);
            for (auto& v : hx) v = u(gen);
            auto wb = be->wrap_host(hw.data(), hw.size() * 4), xb = be->wrap_host(hx.data(), hx.size() * 4);
            auto ob = be->alloc(size_t(m * n) * 4);
            const tensor w{wb.get(), 0, dtype::f32, {k, n, 1, 1}}, x{xb.get(), 0, dtype::f32, {k, m, 1, 1}},
                o{ob.get(), 0, dtype::f32, {n, m, 1, 1}};
            const int reps = k >= 4096 ? 3 : 7;
            const double s = time_op(*be, 1, reps, [&] { be->matmul(w, x, o); });
            std::printf("GEMM %-7s f32 M=%lld N=%lld K=%lld: %8.2f ms  %6.1f GFLOP/s\n", gemm, (long long)m,
                        (long long)n, (long long)k, s * 1e3, 2.0 * double(m * n * k) / s / 1e9);
        }
    }
    // Quantized GEMM (our kernels: CLBlast has none), M=512 N=K=4096.
    {
        auto be = make_backend("opencl");
        const int64_t m = 512, n = 4096, k = 4096;
        std::vector<float> hx(size_t(k * m));
        for (auto& v : hx) v = u(gen);
        auto xb = be->wrap_host(hx.data(), hx.size() * 4);
        auto ob = be->alloc(size_t(m * n) * 4);
        for (dtype t : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k}) {
            const std::vector<uint8_t> host = bench_weights(t, k, n, gen);
            auto wb = be->wrap_host(host.data(), host.size());
            const tensor w{wb.get(), 0, t, {k, n, 1, 1}}, x{xb.get(), 0, dtype::f32, {k, m, 1, 1}},
                o{ob.get(), 0, dtype::f32, {n, m, 1, 1}};
            const double s = time_op(*be, 1, 3, [&] { be->matmul(w, x, o); });
            std::printf("GEMM tandem  %s M=%lld N=%lld K=%lld: %8.2f ms  %6.1f GFLOP/s\n",
                        std::string(dtype_name(t)).c_str(), (long long)m, (long long)n, (long long)k, s * 1e3,
                        2.0 * double(m * n * k) / s / 1e9);
        }
    }
}

#endif  // TANDEM_WITH_OPENCL

}  // namespace
}  // namespace tandem
