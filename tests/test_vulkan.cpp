// The Vulkan backend on this machine's Vulkan device (lavapipe in CI): every op against cpu_ref on odd sizes
// and on sizes that would cross lavapipe's silent 65,535-loop-iteration limit if one invocation looped over
// them, on both memory paths (host-mapped, and forced staging), stream-order semantics, errors reported by
// the device, device selection, the pipeline cache, end-to-end generation and perplexity (f32, and stories260K
// quantized to q8_0 / q4_0 against cpu_ref and cpu), and a run under the Khronos validation layer. Every test
// SKIPs with the reason when no Vulkan device exists.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <string>

#include "backends/backend.h"
#if TANDEM_WITH_VULKAN
#include "backends/vulkan/backend_impl.h"
#include "backends/vulkan/vulkan_backend.h"
#endif
#include "engine/error.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/quantize.h"
#include "engine/quantize_model.h"
#include "engine/session.h"
#include "tests/common/backend_check.h"
#include "tests/common/test_util.h"

#if !TANDEM_WITH_VULKAN
TEST(vulkan, not_built) { GTEST_SKIP() << "this build has no Vulkan backend (TANDEM_VULKAN=OFF)"; }
#else
namespace tandem {
namespace {

using test::count;
using test::fetch;
using test::floats;
using test::host_tensor;
using test::ints;
using test::max_error;
using test::max_error_at;
using test::ne4;
using test::op_fn;
using test::place;
using test::placed;
using test::quantized;
using test::rng;
using test::to_floats;

// The tolerance of a quantized matmul against cpu_ref: d * q is exact in f32, so only the order of the f32
// sums differs; cpu_ref's sequential sum of K products (|w|, |x| <= 1) errs by ~ 3e-8 * K at most for the
// largest outputs (tests/backend_ops/cases_quant.cpp derives it), while a swapped nibble pair or a misread
// scale moves outputs by ~ 0.1 * sqrt(K).
double quant_tolerance(int64_t k) { return 5e-7 * double(k) + 1e-6; }

// ---- the fixture: one backend per memory path ----

using test::scoped_env;

// The backend, or nullptr with the reason when this machine has no usable Vulkan device.
std::unique_ptr<backend> try_vulkan(const std::string& name, std::string& why) { return test::try_backend(name, why); }

// Parameter "<memory>_<kernels>": the direct (host-mapped) or forced staging memory path, and the kernel
// family for CPU-like devices (lavapipe's default) or for GPUs, so both families are checked here.
class vulkan_ops : public ::testing::TestWithParam<const char*> {
 protected:
    void SetUp() override {
        scoped_env staging("TANDEM_VULKAN_FORCE_STAGING", staging_path() ? "1" : nullptr);
        scoped_env kernels("TANDEM_VULKAN_KERNELS", kernel_family());
        be_ = try_vulkan("vulkan", why_);
        if (!be_) GTEST_SKIP() << why_;
    }
    bool staging_path() const { return std::string(GetParam()).rfind("staging", 0) == 0; }
    const char* kernel_family() const {
        return std::string(GetParam()).find("_cpu") != std::string::npos ? "cpu" : "gpu";
    }
    backend& be() { return *be_; }
    // Random data from the test seed (TANDEM_TEST_SEED), printed by failures through `trace`.
    rng r_{test::test_seed()};
    std::string trace(const std::string& what) const {
        return what + " [" + GetParam() + ", seed " + std::to_string(test::test_seed()) + "]";
    }

    std::unique_ptr<backend> be_;
    std::string why_;
};

INSTANTIATE_TEST_SUITE_P(memory, vulkan_ops,
                         ::testing::Values("direct_cpu", "staging_cpu", "direct_gpu", "staging_gpu"),
                         [](const auto& info) { return std::string(info.param); });

// ---- ops ----

TEST_P(vulkan_ops, matmul_odd_and_loop_limit_sizes) {
    struct shape {
        int64_t k, n, m;
    };
    // M <= 8 takes the matrix-vector shader, larger M the tiled one; K = 70,000 would be one invocation's
    // 70,000-iteration loop in a naive one-row-per-invocation kernel.
    std::vector<shape> shapes = {{1, 1, 1},     {5, 7, 1},   {7, 5, 5},     {33, 33, 7},   {4097, 5, 1},
                                 {4097, 7, 33}, {64, 65, 9}, {70000, 3, 1}, {70000, 2, 9}, {300, 513, 64}};
    for (int i = 0; i < 4; ++i) shapes.push_back({r_.integer(1, 300), r_.integer(1, 100), r_.integer(1, 40)});
    for (dtype wt : {dtype::f32, dtype::f16}) {
        for (const auto& s : shapes) {
            const double err =
                max_error(be(),
                          {r_.tensor(wt, {s.k, s.n, 1, 1}), r_.tensor(dtype::f32, {s.k, s.m, 1, 1}),
                           r_.tensor(dtype::f32, {s.n, s.m, 1, 1})},
                          {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); });
            // Only the summation order differs (f16 -> f32 is exact): float rounding of a K-term dot product of
            // terms in [-1, 1] stays far below 2e-6 K, while one lost or doubled term moves the result by ~0.3.
            EXPECT_LE(err, 2e-6 * double(s.k) + 1e-6)
                << trace("matmul_" + std::string(dtype_name(wt)) + "_f32 K=" + std::to_string(s.k) +
                         " N=" + std::to_string(s.n) + " M=" + std::to_string(s.m));
        }
    }
}

// The attention case: q {D, Hq, M}, caches {D Hkv, S}, meta {4, M}, slots {M}, out {D, Hq, M}.
// meta/slots hold T entries: the M query rows first, then walk-only entries (M = T unless `rows` is set).
struct attn_case {
    int64_t d, hq, hkv, s;
    std::vector<int32_t> meta, slots;
    float q_scale = 1.f;
    int64_t rows = -1;
};

double attention_error(backend& be, rng& r, const attn_case& c, dtype cache) {
    const int64_t t = int64_t(c.slots.size()), m = c.rows >= 0 ? c.rows : t;
    std::vector<host_tensor> args = {r.tensor(dtype::f32, {c.d, c.hq, m, 1}, -c.q_scale, c.q_scale),
                                     r.tensor(cache, {c.d * c.hkv, c.s, 1, 1}),
                                     r.tensor(cache, {c.d * c.hkv, c.s, 1, 1}),
                                     ints({4, t, 1, 1}, c.meta),
                                     ints({t, 1, 1, 1}, c.slots),
                                     r.tensor(dtype::f32, {c.d, c.hq, m, 1})};
    const float scale = 1.f / std::sqrt(float(c.d));
    return max_error(be, args, {5}, [scale](backend& b, const std::vector<tensor>& t) {
        b.attention(t[0], t[1], t[2], t[3], t[4], attention_params{scale}, t[5]);
    });
}

TEST_P(vulkan_ops, attention_long_context_tree_and_ragged) {
    std::vector<std::pair<std::string, attn_case> > cases;
    // One decode row over 70,000 slots with head size 8: far past 65,535 iterations for one invocation.
    cases.push_back({"decode S=70000", {8, 2, 1, 70000, {0, 70000, -1, -1}, {69999}}});
    // The same context ending in a 4-node tree branch (kv_len = committed prefix, then the walk).
    {
        attn_case c{8, 4, 2, 70010, {}, {}};
        const int32_t parents[4] = {-1, 0, 1, 1};
        for (int32_t j = 0; j < 4; ++j) {
            c.meta.insert(c.meta.end(), {0, 70000, j, parents[j]});
            c.slots.push_back(70000 + j);
        }
        cases.push_back({"tree over S=70000", c});
    }
    // A random 24-node token tree of session A and a 5-token causal chain of session B in one ragged batch.
    for (int64_t d : {5, 16, 128}) {
        attn_case c{d, 4, 2, 200, {}, {}, 3.f};
        std::vector<int32_t> parent(24);
        for (int32_t j = 0; j < 24; ++j) {
            parent[size_t(j)] = j == 0 || r_.integer(0, 5) == 0 ? -1 : int32_t(r_.integer(0, j - 1));
            c.meta.insert(c.meta.end(), {0, 40, j, parent[size_t(j)]});
            c.slots.push_back(40 + j);
        }
        for (int32_t i = 0; i < 5; ++i) {
            c.meta.insert(c.meta.end(), {100, 30 + i + 1, -1, -1});
            c.slots.push_back(100 + 30 + i);
        }
        cases.push_back({"ragged tree + chain D=" + std::to_string(d), c});
    }
    // A tree verified in a second pass: query rows 0..2 (parents 3, 0, 1 / 4) walk through walk-only entries
    // 3..5 (already in the cache, junk kv fields) ending at the committed prefix of 50 slots.
    {
        attn_case c{16, 4, 2, 80, {}, {}, 2.f, 3};
        c.meta = {0, 50, 0, 3, 0, 50, 1, 0, 0, 50, 2, 4, -77, 999, -1, 5, -77, 999, -1, 3, -77, 999, -1, -1};
        c.slots = {56, 57, 58, 50, 51, 52};
        cases.push_back({"second pass over walk-only entries", c});
    }
    for (dtype cache : {dtype::f32, dtype::f16}) {
        for (const auto& [what, c] : cases) {
            // Outputs are convex combinations of values in [-1, 1]: online vs two-pass softmax and the order of
            // the sums change them by float ulps (even over 70,000 slots), a missing or extra slot by far more.
            EXPECT_LE(attention_error(be(), r_, c, cache), 2e-5)
                << trace("attention_" + std::string(dtype_name(cache)) + " " + what);
        }
    }
}

TEST_P(vulkan_ops, row_ops_odd_and_long_rows) {
    for (int64_t k : {1, 5, 7, 33, 64, 4096, 4097, 70000}) {
        for (int64_t m : {1, 3}) {
            const std::string shape = " K=" + std::to_string(k) + " M=" + std::to_string(m);
            const host_tensor x = r_.tensor(dtype::f32, {k, m, 1, 1}, -5.f, 5.f);
            // rms_norm: only the sum of squares is reordered. Outputs reach |x / rms * w| ~ 4; cpu_ref's sequential
            // float sum of K squares carries a relative error ~ sqrt(K) * 6e-8 (1.6e-5 at K = 70,000).
            const double rms_tol = 1e-5 + 4 * 6e-8 * std::sqrt(double(k));
            EXPECT_LE(max_error(be(), {x, r_.tensor(dtype::f32, {k, 1, 1, 1}, -2.f, 2.f), x}, {2},
                                [](backend& b, const std::vector<tensor>& t) { b.rms_norm(t[0], t[1], 1e-5f, t[2]); }),
                      rms_tol)
                << trace("rms_norm_f32_f32" + shape);
            // In place (out aliases x).
            EXPECT_LE(max_error(be(), {x, r_.tensor(dtype::f32, {k, 1, 1, 1}, -2.f, 2.f)}, {0},
                                [](backend& b, const std::vector<tensor>& t) { b.rms_norm(t[0], t[1], 1e-5f, t[0]); }),
                      rms_tol)
                << trace("rms_norm_f32_f32 in place" + shape);
            // softmax: probabilities in [0, 1]; exp and the sum differ by a few ulps between implementations.
            EXPECT_LE(
                max_error(be(), {x, x}, {1}, [](backend& b, const std::vector<tensor>& t) { b.softmax(t[0], t[1]); }),
                1e-6)
                << trace("softmax_f32_f32" + shape);
            // argmax: exact, with the maximum repeated so that the first occurrence must win.
            std::vector<float> v = to_floats(x);
            for (int64_t row = 0; row < m; ++row) {
                v[size_t(row * k + k - 1)] = 9.f;
                v[size_t(row * k + (k - 1) / 2)] = 9.f;
            }
            EXPECT_EQ(
                max_error(be(),
                          {floats(dtype::f32, {k, m, 1, 1}, v), ints({m, 1, 1, 1}, std::vector<int32_t>(size_t(m)))},
                          {1}, [](backend& b, const std::vector<tensor>& t) { b.argmax(t[0], t[1]); }),
                0)
                << trace("argmax_f32_i32" + shape);
        }
    }
}

TEST_P(vulkan_ops, elementwise_get_rows_rope) {
    for (int64_t n : {1, 5, 7, 33, 4097, 70001}) {
        const host_tensor a = r_.tensor(dtype::f32, {n, 1, 1, 1}, -20.f, 20.f), b = r_.tensor(dtype::f32, {n, 1, 1, 1});
        // add: one rounding per element, the same everywhere.
        EXPECT_EQ(max_error(be(), {a, b, a}, {2},
                            [](backend& be, const std::vector<tensor>& t) { be.add(t[0], t[1], t[2]); }),
                  0)
            << trace("add_f32_f32 n=" + std::to_string(n));
        // swiglu: a different exp changes silu by ~2 ulp relative; |outputs| <= 20.
        EXPECT_LE(max_error(be(), {a, b}, {0},
                            [](backend& be, const std::vector<tensor>& t) { be.swiglu(t[0], t[1], t[0]); }),
                  2e-5)
            << trace("swiglu_f32_f32 in place n=" + std::to_string(n));
    }
    for (dtype tt : {dtype::f32, dtype::f16}) {
        for (int64_t k : {1, 5, 7, 33, 4097}) {
            std::vector<int32_t> ids = {6, 0, 3, 3, 1};
            // A copy (f16 -> f32 is exact): bit-exact.
            EXPECT_EQ(
                max_error(be(),
                          {r_.tensor(tt, {k, 7, 1, 1}), ints({5, 1, 1, 1}, ids), r_.tensor(dtype::f32, {k, 5, 1, 1})},
                          {2}, [](backend& be, const std::vector<tensor>& t) { be.get_rows(t[0], t[1], t[2]); }),
                0)
                << trace("get_rows_" + std::string(dtype_name(tt)) + "_f32 K=" + std::to_string(k));
        }
    }
    for (int64_t n_rot : {8, 4, 0}) {
        std::vector<int32_t> pos = {0, 1, 17, 4096, 70000};
        const rope_params p{int32_t(n_rot), 10000.f};
        // Both sides round theta = pos * inv_freq identically (same float table); our cos/sin are accurate to
        // ~2e-6 for |theta| < 1e5, so outputs (|x| <= 1) agree to 1e-5; a wrong pair or frequency is O(1).
        EXPECT_LE(max_error(be(), {r_.tensor(dtype::f32, {8, 3, 5, 1}), ints({5, 1, 1, 1}, pos)}, {0},
                            [p](backend& be, const std::vector<tensor>& t) { be.rope(t[0], t[1], p); }),
                  1e-5)
            << trace("rope_f32_f32 n_rot=" + std::to_string(n_rot));
    }
}

TEST_P(vulkan_ops, kv_write_and_copy) {
    for (dtype cache : {dtype::f32, dtype::f16}) {
        for (int64_t k : {1, 5, 7, 33, 64}) {
            const std::string shape = std::string(dtype_name(cache)) + " K=" + std::to_string(k);
            // Neighbouring slots: with odd K two f16 rows share a 32-bit word.
            std::vector<int32_t> slots = {3, 4, 5, 9, 0};
            // A copy (f32) or round-to-nearest-even done with integer operations (f16): bit-exact. Row 0 holds
            // halfway cases, values that overflow or fall to subnormals, and infinities.
            std::vector<float> src = r_.floats(k * 5, -3.f, 3.f);
            const float special[] = {1.f + 0x1p-11f, 1.f + 0x3p-11f, -2.f - 0x1p-10f, 65519.f,    65520.f,  1e5f,
                                     1e-7f,          -3e-8f,         0x1p-25f,        0x1.8p-25f, INFINITY, -INFINITY};
            for (int64_t i = 0; i < std::min<int64_t>(k, 12); ++i) src[size_t(i)] = special[i];
            EXPECT_EQ(max_error(be(),
                                {floats(dtype::f32, {k, 5, 1, 1}, src), r_.tensor(cache, {k, 12, 1, 1}),
                                 ints({5, 1, 1, 1}, slots)},
                                {1}, [](backend& b, const std::vector<tensor>& t) { b.kv_write(t[0], t[1], t[2]); }),
                      0)
                << trace("kv_write_f32_" + shape);
            // Compaction where dst[i + 1] == src[i]: all reads must precede all writes. Moves bits: exact.
            EXPECT_EQ(max_error(be(),
                                {r_.tensor(cache, {k, 12, 1, 1}), ints({5, 1, 1, 1}, {5, 6, 7, 8, 11}),
                                 ints({5, 1, 1, 1}, {4, 5, 6, 7, 8})},
                                {0}, [](backend& b, const std::vector<tensor>& t) { b.kv_copy(t[0], t[1], t[2]); }),
                      0)
                << trace("kv_copy_" + shape);
        }
    }
}

// A tiny loop budget (TANDEM_VULKAN_LOOP_BUDGET) forces every split on small shapes: matmul split-K with
// accumulation in several dispatches (both shaders), attention over many parts with the tree walk in the
// last one and the combine pass. (On lavapipe the real budget matters: with it lifted, one row over 70,000
// slots at head size 128 comes out wrong, silently.)
TEST_P(vulkan_ops, splits_forced_by_a_small_loop_budget) {
    scoped_env budget("TANDEM_VULKAN_LOOP_BUDGET", "600");
    scoped_env staging("TANDEM_VULKAN_FORCE_STAGING", staging_path() ? "1" : nullptr);
    scoped_env kernels("TANDEM_VULKAN_KERNELS", kernel_family());
    std::string why;
    auto small = try_vulkan("vulkan", why);
    if (!small) GTEST_SKIP() << why;
    for (dtype wt : {dtype::f32, dtype::f16}) {
        for (int64_t m : {1, 3, 9, 17}) {
            for (int64_t k : {4097, 20000}) {
                const double err =
                    max_error(*small,
                              {r_.tensor(wt, {k, 5, 1, 1}), r_.tensor(dtype::f32, {k, m, 1, 1}),
                               r_.tensor(dtype::f32, {5, m, 1, 1})},
                              {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); });
                // As in matmul_odd_and_loop_limit_sizes: summation order only.
                EXPECT_LE(err, 2e-6 * double(k) + 1e-6)
                    << trace("split-K matmul K=" + std::to_string(k) + " M=" + std::to_string(m));
            }
        }
    }
    for (int64_t d : {8, 16}) {
        attn_case c{d, 2, 1, 3000, {}, {}, 2.f};
        const int32_t parents[5] = {-1, 0, 1, 0, 3};
        for (int32_t j = 0; j < 5; ++j) {
            c.meta.insert(c.meta.end(), {0, 2990, j, parents[j]});
            c.slots.push_back(2990 + j);
        }
        c.meta.insert(c.meta.end(), {0, 3000, -1, -1});
        c.slots.push_back(2999);
        for (dtype cache : {dtype::f32, dtype::f16})
            EXPECT_LE(attention_error(*small, r_, c, cache), 2e-5)
                << trace("split attention_" + std::string(dtype_name(cache)) + " D=" + std::to_string(d));
    }
}

// Q8_0 / Q4_0 weights: blocks start at any even byte, so the weights sit at every even offset inside a 16-byte
// texel (both halves of a 32-bit word; R0 of the texel shader), with the activations 16-byte aligned (texel
// paths) or not (storage paths). K: one block, not whole 8-block groups (96, 288), whole groups (256, 4096) and
// 16,384 (long rows under lavapipe's loop limit); N up to 131,072 (a large vocabulary: grids past 65,535
// groups per dimension on some paths); M from decode to the tiled / chunked paths.
TEST_P(vulkan_ops, quant_matmul_offsets_long_rows_and_get_rows) {
    struct shape {
        int64_t k, n, m;
    };
    std::vector<shape> shapes = {{32, 7, 1},    {96, 33, 5},   {288, 65, 9},    {256, 250, 17}, {4096, 33, 3},
                                 {16384, 7, 1}, {16384, 5, 9}, {64, 131072, 1}, {512, 31, 300}};
    shapes.push_back({r_.integer(1, 40) * 32, r_.integer(1, 99) * 2 + 1, r_.integer(1, 70)});
    const size_t w_offsets[] = {16, 18, 22, 30, 34, 258};
    size_t i = 0;
    for (dtype wt : {dtype::q8_0, dtype::q4_0}) {
        for (const auto& s : shapes) {
            const size_t w_off = w_offsets[i % 6], x_off = i % 3 == 2 ? 20 : 16;
            ++i;
            const double err = max_error_at(
                be(),
                {quantized(r_, wt, {s.k, s.n, 1, 1}), r_.tensor(dtype::f32, {s.k, s.m, 1, 1}),
                 r_.tensor(dtype::f32, {s.n, s.m, 1, 1})},
                {w_off, x_off, 16}, {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); });
            EXPECT_LE(err, quant_tolerance(s.k))
                << trace("matmul_" + std::string(dtype_name(wt)) + "_f32 K=" + std::to_string(s.k) +
                         " N=" + std::to_string(s.n) + " M=" + std::to_string(s.m) + " w at byte " +
                         std::to_string(w_off) + ", x at byte " + std::to_string(x_off));
        }
        for (auto [k, rows] : {std::pair<int64_t, int64_t>{32, 131072}, {96, 7}, {4096, 5}}) {
            const std::vector<int32_t> ids = {int32_t(rows - 1), 0, int32_t(rows / 2), int32_t(rows - 1)};
            for (size_t off : {16, 18, 22}) {
                // d * q in f32 is exact: bit-identical to cpu_ref.
                EXPECT_EQ(max_error_at(be(),
                                       {quantized(r_, wt, {k, rows, 1, 1}), ints({4, 1, 1, 1}, ids),
                                        r_.tensor(dtype::f32, {k, 4, 1, 1})},
                                       {off, 16, 16}, {2},
                                       [](backend& b, const std::vector<tensor>& t) { b.get_rows(t[0], t[1], t[2]); }),
                          0)
                    << trace("get_rows_" + std::string(dtype_name(wt)) + "_f32 K=" + std::to_string(k) +
                             " rows=" + std::to_string(rows) + " at byte " + std::to_string(off));
            }
        }
    }
}

// A loop budget of 70 (6 iterations per dispatch) splits every quantized path along K: whole blocks, whole
// 8-block groups (K % 256 == 0 on the texel path), TPR blocks per iteration (GPU matrix-vector).
TEST_P(vulkan_ops, quant_splits_forced_by_a_small_loop_budget) {
    scoped_env budget("TANDEM_VULKAN_LOOP_BUDGET", "70");
    scoped_env staging("TANDEM_VULKAN_FORCE_STAGING", staging_path() ? "1" : nullptr);
    scoped_env kernels("TANDEM_VULKAN_KERNELS", kernel_family());
    std::string why;
    auto small = try_vulkan("vulkan", why);
    if (!small) GTEST_SKIP() << why;
    for (dtype wt : {dtype::q8_0, dtype::q4_0}) {
        for (int64_t m : {1, 9, 17}) {
            for (int64_t k : {4160, 8192}) {
                const double err = max_error_at(
                    *small,
                    {quantized(r_, wt, {k, 5, 1, 1}), r_.tensor(dtype::f32, {k, m, 1, 1}),
                     r_.tensor(dtype::f32, {5, m, 1, 1})},
                    {18, 16, 16}, {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); });
                EXPECT_LE(err, quant_tolerance(k)) << trace("split-K matmul_" + std::string(dtype_name(wt)) +
                                                            " K=" + std::to_string(k) + " M=" + std::to_string(m));
            }
        }
    }
}

// Dependent ops recorded back to back without a host wait: the barriers between them must order them.
TEST_P(vulkan_ops, dependent_chain_in_one_submit) {
    const int64_t k = 96, n = 96, m = 3;
    const auto chain = [](backend& b, const std::vector<tensor>& t) {
        b.matmul(t[0], t[1], t[2]);  // y = W x
        b.add(t[2], t[1], t[2]);     // y += x
        b.rms_norm(t[2], t[3], 1e-5f, t[2]);
        b.matmul(t[0], t[2], t[1]);  // x = W y (overwrites an input of the first matmul)
        b.swiglu(t[1], t[2], t[1]);
        b.softmax(t[1], t[1]);
    };
    // Six ops deep with O(1) values: float reordering stays below 1e-5.
    EXPECT_LE(max_error(be(),
                        {r_.tensor(dtype::f32, {k, n, 1, 1}), r_.tensor(dtype::f32, {k, m, 1, 1}),
                         r_.tensor(dtype::f32, {n, m, 1, 1}), r_.tensor(dtype::f32, {k, 1, 1, 1})},
                        {1, 2}, chain),
              1e-5)
        << trace("matmul -> add -> rms_norm -> matmul -> swiglu -> softmax");
}

// upload() is ordered after every op enqueued before it: those ops see the old contents.
TEST_P(vulkan_ops, upload_is_ordered_after_earlier_ops) {
    const int64_t n = 1000;
    auto a = be().alloc(n * 4), b = be().alloc(n * 4), c = be().alloc(n * 4), d = be().alloc(n * 4);
    std::vector<float> one(n, 1.f), two(n, 2.f), ten(n, 10.f), out(n);
    be().upload(*a, 0, one.data(), n * 4);
    be().upload(*b, 0, two.data(), n * 4);
    const tensor ta{a.get(), 0, dtype::f32, {n, 1, 1, 1}}, tb{b.get(), 0, dtype::f32, {n, 1, 1, 1}},
        tc{c.get(), 0, dtype::f32, {n, 1, 1, 1}}, td{d.get(), 0, dtype::f32, {n, 1, 1, 1}};
    be().add(ta, tb, tc);  // c = 1 + 2
    be().upload(*a, 0, ten.data(), n * 4);
    be().add(ta, tb, td);  // d = 10 + 2
    be().download(*c, 0, out.data(), n * 4);
    EXPECT_EQ(out[0], 3.f) << trace("add enqueued before the upload");
    EXPECT_EQ(out[n - 1], 3.f);
    be().download(*d, 0, out.data(), n * 4);
    EXPECT_EQ(out[0], 12.f) << trace("add enqueued after the upload");
    // A freed buffer whose op is still pending is released only after the op ran.
    {
        auto e = be().alloc(n * 4);
        be().add(ta, tb, tensor{e.get(), 0, dtype::f32, {n, 1, 1, 1}});
    }
    be().synchronize();
}

// A bad index is detected on the device and reported by the next synchronize; the backend stays usable.
TEST_P(vulkan_ops, device_side_errors_throw_and_recover) {
    auto table = be().alloc(8 * 5 * 4), ids = be().alloc(8), out = be().alloc(8 * 2 * 4);
    const int32_t bad[2] = {1, 5};
    be().upload(*ids, 0, bad, 8);
    be().get_rows(tensor{table.get(), 0, dtype::f32, {8, 5, 1, 1}}, tensor{ids.get(), 0, dtype::i32, {2, 1, 1, 1}},
                  tensor{out.get(), 0, dtype::f32, {8, 2, 1, 1}});
    try {
        be().synchronize();
        ADD_FAILURE() << "get_rows with id 5 of 5 rows did not throw";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(e.what()).find("get_rows"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(be().synchronize());
    EXPECT_LE(max_error(be(),
                        {r_.tensor(dtype::f32, {33, 7, 1, 1}), r_.tensor(dtype::f32, {33, 2, 1, 1}),
                         r_.tensor(dtype::f32, {7, 2, 1, 1})},
                        {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); }),
              1e-4);
}

// ---- device selection, caches, profiling ----

TEST(vulkan_device, selection_by_index_and_name) {
    std::string why;
    auto be = try_vulkan("vulkan:0", why);
    if (!be) GTEST_SKIP() << why;
    EXPECT_EQ(be->name(), "vulkan");
    const std::string report = vulkan_devices_report();
    EXPECT_NE(report.find("vulkan:0"), std::string::npos) << report;
    // The first device's name, taken from the report, selects it case-insensitively.
    const size_t at = report.find("vulkan:0") + 10;
    std::string name = report.substr(at, 4);
    for (auto& ch : name) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    EXPECT_NO_THROW(make_backend("vulkan:" + name)) << name;
    for (const char* bad : {"vulkan:99", "vulkan:no-such-device"}) {
        try {
            make_backend(bad);
            ADD_FAILURE() << bad << " did not throw";
        } catch (const error& e) {
            EXPECT_EQ(e.status(), TANDEM_ERR_INVALID_ARGUMENT) << e.what();
        }
    }
    scoped_env env("TANDEM_VULKAN_DEVICE", "0");
    EXPECT_NO_THROW(make_backend("vulkan"));
}

TEST(vulkan_device, corrupt_pipeline_cache_is_ignored_and_rewritten) {
    const std::string dir =
        (std::filesystem::temp_directory_path() / ("tandem-vk-cache-" + std::to_string(getpid()))).string();
    scoped_env env("TANDEM_CACHE_DIR", dir.c_str());
    std::string why;
    {
        auto be = try_vulkan("vulkan", why);
        if (!be) GTEST_SKIP() << why;
        rng r(1);
        EXPECT_LE(max_error(*be,
                            {r.tensor(dtype::f32, {9, 4, 1, 1}), r.tensor(dtype::f32, {9, 1, 1, 1}),
                             r.tensor(dtype::f32, {4, 1, 1, 1})},
                            {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); }),
                  1e-5);
    }
    std::vector<std::filesystem::path> files;
    for (const auto& f : std::filesystem::directory_iterator(dir)) files.push_back(f.path());
    ASSERT_EQ(files.size(), 1u) << "one pipeline cache file per device in " << dir;
    const auto size = std::filesystem::file_size(files[0]);
    {
        std::ofstream out(files[0], std::ios::binary | std::ios::trunc);
        out << "TNDMVKPC this is not a pipeline cache";
    }
    {
        auto be = make_backend("vulkan");
        rng r(2);
        EXPECT_LE(max_error(*be,
                            {r.tensor(dtype::f32, {9, 4, 1, 1}), r.tensor(dtype::f32, {9, 1, 1, 1}),
                             r.tensor(dtype::f32, {4, 1, 1, 1})},
                            {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); }),
                  1e-5);
    }
    EXPECT_EQ(std::filesystem::file_size(files[0]), size) << "rewritten atomically after the corrupt one was ignored";
    std::filesystem::remove_all(dir);
}

TEST(vulkan_device, profiling_runs) {
    scoped_env env("TANDEM_VULKAN_PROFILE", "1");
    std::string why;
    auto be = try_vulkan("vulkan", why);
    if (!be) GTEST_SKIP() << why;
    rng r(3);
    EXPECT_LE(max_error(*be,
                        {r.tensor(dtype::f32, {64, 64, 1, 1}), r.tensor(dtype::f32, {64, 16, 1, 1}),
                         r.tensor(dtype::f32, {64, 16, 1, 1})},
                        {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); }),
              1e-4);
}

// ---- end to end on the bundled model ----

TEST(vulkan_e2e, stories260k_greedy_story_matches_llama2c) {
    std::string why;
    auto be = try_vulkan("vulkan", why);
    if (!be) GTEST_SKIP() << why;
    auto m = model::load(test::model_path("stories260K.gguf"), std::move(be));
    std::string expected = test::read_file(test::model_path("stories260K_greedy.txt"));
    while (!expected.empty() && (expected.back() == '\n' || expected.back() == ' ')) expected.pop_back();
    // As tests/test_e2e.cpp: llama2.c's 256 steps from BOS (doc/stories260K.md), word for word.
    const auto t0 = std::chrono::steady_clock::now();
    const std::string got = test::greedy_story(*m, 256);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(got, expected);
    std::printf("greedy story: 256 steps in %.2f s on vulkan\n", s);
}

// The standard protocol (first 60,000 characters, window 255) against cpu_ref on the same text.
TEST(vulkan_e2e, perplexity_matches_cpu_ref) {
    std::string why;
    auto be = try_vulkan("vulkan", why);
    if (!be) GTEST_SKIP() << why;
    auto m = model::load(test::model_path("stories260K.gguf"), std::move(be));
    auto ref = model::load(test::model_path("stories260K.gguf"), make_backend("cpu_ref"));
    const std::string text = test::read_file(test::model_path("tinystories_valid_head.txt")).substr(0, 60000);
    const auto r = perplexity(*m, text, 255);
    const auto c = perplexity(*ref, text, 255);
    EXPECT_EQ(r.n_tokens, c.n_tokens);
    EXPECT_NEAR(r.mean_nll(), c.mean_nll(), c.mean_nll() * 0.001);
    EXPECT_NEAR(r.perplexity(), c.perplexity(), c.perplexity() * 0.001);
    std::printf("perplexity: vulkan %.6f nats/token (%.2f s), cpu_ref %.6f (%.2f s), %lld tokens\n", r.mean_nll(),
                r.seconds, c.mean_nll(), c.seconds, static_cast<long long>(r.n_tokens));
}

// ---- quantized models end to end: stories260K through quantize_model ----

// stories260K quantized once per process (tests/common/test_util).
class vulkan_quant_e2e : public ::testing::Test {
   protected:
    static std::string path(dtype t) { return test::quantized_stories260k(std::string(dtype_name(t)).c_str()); }
};

// 128 greedy tokens of the q8_0 and q4_0 models on vulkan (both memory paths) against cpu_ref, which computes the
// same products (exact dequantization, f32 activations) in another order: the same tokens, and logits within
// 1e-3 at every step (they reach ~15; summation order moves them by ~1e-5). A divergence is accepted only at a
// near-tie of cpu_ref's two best logits (< 1e-3 apart), and is reported.
TEST_F(vulkan_quant_e2e, stories260k_greedy_matches_cpu_ref) {
    const int n = 128;
    for (dtype t : {dtype::q8_0, dtype::q4_0}) {
        const auto want = test::greedy_with_logits(*model::load(path(t), make_backend("cpu_ref")), n);
        for (const char* staging : {"0", "1"}) {
            scoped_env env("TANDEM_VULKAN_FORCE_STAGING", staging);
            std::string why;
            auto be = try_vulkan("vulkan", why);
            if (!be) GTEST_SKIP() << why;
            const auto got = test::greedy_with_logits(*model::load(path(t), std::move(be)), n);
            test::expect_greedy_agrees(got, want, std::string(dtype_name(t)) + (staging[0] == '1' ? " (staging)" : " (direct)"));
        }
    }
}

// Perplexity of the q8_0 model (first 60,000 characters, window 255) within 0.1% of cpu_ref's and of cpu's
// (which also quantizes the activations to 8 bits, backends/cpu/cpu_matmul_quant.cpp).
TEST_F(vulkan_quant_e2e, stories260k_q8_0_perplexity_matches_cpu) {
    std::string why;
    auto be = try_vulkan("vulkan", why);
    if (!be) GTEST_SKIP() << why;
    const std::string text = test::read_file(test::model_path("tinystories_valid_head.txt")).substr(0, 60000);
    const auto r = perplexity(*model::load(path(dtype::q8_0), std::move(be)), text, 255);
    for (const char* ref_name : {"cpu_ref", "cpu"}) {
        const auto c = perplexity(*model::load(path(dtype::q8_0), make_backend(ref_name)), text, 255);
        EXPECT_EQ(r.n_tokens, c.n_tokens);
        EXPECT_NEAR(r.perplexity(), c.perplexity(), c.perplexity() * 0.001) << ref_name;
        std::printf("[ info     ] q8_0 perplexity: vulkan %.6f (%.2f s), %s %.6f (%.2f s), %lld tokens\n",
                    r.perplexity(), r.seconds, ref_name, c.perplexity(), c.seconds, static_cast<long long>(r.n_tokens));
    }
}

// ---- the Khronos validation layer over a representative subset ----

TEST(vulkan_validation, representative_subset_reports_no_errors) {
    if (!vulkan_validation_available())
        GTEST_SKIP() << "VK_LAYER_KHRONOS_validation is not installed (vulkan-validationlayers)";
    scoped_env env("TANDEM_VULKAN_VALIDATION", "1");
    const uint64_t before = vulkan_validation_errors();
    for (const char* config : {"0cpu", "1cpu", "0gpu", "1gpu"}) {  // memory path x kernel family
        scoped_env path("TANDEM_VULKAN_FORCE_STAGING", config[0] == '1' ? "1" : "0");
        scoped_env kernels("TANDEM_VULKAN_KERNELS", config + 1);
        std::string why;
        auto be = try_vulkan("vulkan", why);
        if (!be) GTEST_SKIP() << why;
        rng r(4);
        for (int64_t m : {1, 9})  // matrix-vector and tiled matmul, f32 and f16
            for (dtype wt : {dtype::f32, dtype::f16})
                EXPECT_LE(max_error(*be,
                                    {r.tensor(wt, {33, 7, 1, 1}), r.tensor(dtype::f32, {33, m, 1, 1}),
                                     r.tensor(dtype::f32, {7, m, 1, 1})},
                                    {2}, [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); }),
                          1e-4);
        for (int64_t m : {1, 9})  // quantized weights: texel / storage words (CPU family), vec / tiled (GPU family)
            for (dtype wt : {dtype::q8_0, dtype::q4_0})
                EXPECT_LE(max_error_at(*be,
                                       {quantized(r, wt, {96, 7, 1, 1}), r.tensor(dtype::f32, {96, m, 1, 1}),
                                        r.tensor(dtype::f32, {7, m, 1, 1})},
                                       {18, 16, 16}, {2},
                                       [](backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); }),
                          1e-4);
        // Split attention + combine over a long context, and the tree walk.
        EXPECT_LE(attention_error(*be, r, {8, 2, 1, 3000, {0, 3000, -1, -1, 0, 2990, 1, -1}, {2999, 2991}}, dtype::f16),
                  2e-5);
        EXPECT_EQ(max_error(*be,
                            {r.tensor(dtype::f16, {7, 12, 1, 1}), ints({3, 1, 1, 1}, {5, 6, 7}),
                             ints({3, 1, 1, 1}, {4, 5, 6})},
                            {0}, [](backend& b, const std::vector<tensor>& t) { b.kv_copy(t[0], t[1], t[2]); }),
                  0);
        EXPECT_LE(max_error(*be, {r.tensor(dtype::f32, {4097, 2, 1, 1}), r.tensor(dtype::f32, {4097, 2, 1, 1})}, {1},
                            [](backend& b, const std::vector<tensor>& t) { b.softmax(t[0], t[1]); }),
                  1e-6);
        auto m = model::load(test::model_path("stories260K.gguf"), std::move(be));
        EXPECT_EQ(test::greedy_story(*m, 12).rfind("Once upon a time", 0), 0u);
    }
    EXPECT_EQ(vulkan_validation_errors() - before, 0u) << "see the validation messages logged above";
}

}  // namespace
}  // namespace tandem
#endif  // TANDEM_WITH_VULKAN
