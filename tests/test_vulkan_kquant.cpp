// Q4_K / Q6_K weights on the Vulkan backend (lavapipe in CI), both kernel families and both memory paths, against
// cpu_ref: matmul with the weights at every even byte offset inside a 16-byte texel, on shapes that take every path
// (matrix-vector, tiled, rows, texel; activation-row chunks; K of one super-block to thousands), rows so long that one
// invocation looping over them would cross lavapipe's silent 65,535-iteration limit, forced split-K under a tiny loop
// budget, get_rows bit for bit and a pass under the validation layer; then greedy generation of a synthetic model
// with 256-multiple rows quantized by our quantizer to q4_k and q4_k_m (q4_k + q6_k) against cpu_ref. Every test
// SKIPs with the reason when no Vulkan device exists. tests/backend_ops/cases_kquant.cpp has the ragged-shape sweep.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/vulkan/vulkan_backend.h"
#include "engine/model.h"
#include "engine/quantize.h"
#include "engine/quantize_model.h"
#include "engine/synth.h"
#include "tests/common/backend_check.h"
#include "tests/common/test_util.h"

#if !TANDEM_WITH_VULKAN
TEST(vulkan_kquant, not_built) { GTEST_SKIP() << "this build has no Vulkan backend (TANDEM_VULKAN=OFF)"; }
#else
namespace tandem {
namespace {

using test::scoped_env;

using test::host_tensor;
using test::max_error_at;
using test::op_fn;

host_tensor f32_tensor(std::mt19937_64& g, int64_t k, int64_t rows) {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> v(size_t(k * rows));
    for (auto& x : v) x = u(g);
    host_tensor h{dtype::f32, {k, rows, 1, 1}, std::vector<uint8_t>(v.size() * 4)};
    std::memcpy(h.bytes.data(), v.data(), h.bytes.size());
    return h;
}

// Uniform [-1, 1] values quantized to t by our quantizer (engine/quantize.h), with every 32-weight sub-block scaled
// by 2^-(0..5) so that sub-block scales and mins differ within a super-block.
host_tensor quantized(std::mt19937_64& g, dtype t, int64_t k, int64_t rows) {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> v(size_t(k * rows));
    for (size_t i = 0; i < v.size(); ++i) v[i] = u(g) * std::ldexp(1.f, -int(i / 32 % 6));
    const size_t rb = dtype_row_bytes(t, k);
    host_tensor h{t, {k, rows, 1, 1}, std::vector<uint8_t>(rb * size_t(rows))};
    for (int64_t r = 0; r < rows; ++r) quantize_row(t, v.data() + r * k, h.bytes.data() + size_t(r) * rb, k);
    return h;
}

// Random quant bytes under fixed scales, so every value stays within [-1, 1] (Q4_K: d = 1e-3 with 6-bit scales and
// 4-bit quants, dmin = 1.5e-2 with 6-bit mins; Q6_K: d = 2.4e-4 with 8-bit scales and 6-bit quants): the long rows,
// where running our quantizer over tens of millions of weights would only slow the test down.
host_tensor random_blocks(std::mt19937_64& g, dtype t, int64_t k, int64_t rows) {
    host_tensor h{t, {k, rows, 1, 1}, std::vector<uint8_t>(dtype_row_bytes(t, k) * size_t(rows))};
    for (auto& b : h.bytes) b = uint8_t(g());
    const size_t bb = t == dtype::q4_k ? 144 : 210;
    for (size_t i = 0; i < h.bytes.size(); i += bb) {
        if (t == dtype::q4_k) {
            const uint16_t d = fp32_to_fp16(1e-3f), dmin = fp32_to_fp16(1.5e-2f);
            std::memcpy(&h.bytes[i], &d, 2), std::memcpy(&h.bytes[i + 2], &dmin, 2);
        } else {
            const uint16_t d = fp32_to_fp16(2.4e-4f);
            std::memcpy(&h.bytes[i + 208], &d, 2);
        }
    }
    return h;
}

host_tensor zeros(int64_t k, int64_t rows) {
    return {dtype::f32, {k, rows, 1, 1}, std::vector<uint8_t>(size_t(k * rows) * 4)};
}

// Every decode is exact in f32 (shaders/include/kquant.glsl), so only the order of the f32 sums differs from
// cpu_ref's: with |w|, |x| <= 1 its sequential sum errs by ~3e-8 * K at most for the largest outputs
// (tests/backend_ops/cases_quant.cpp derives it), while a misdecoded unit moves outputs by ~0.1 * sqrt(K).
double tolerance(int64_t k) { return 5e-7 * double(k) + 1e-6; }

void matmul_op(backend& b, const std::vector<tensor>& t) { b.matmul(t[0], t[1], t[2]); }

// Parameter "<memory>_<kernels>", as test_vulkan.cpp's vulkan_ops: the direct (host-mapped) or forced staging memory
// path, and the kernel family for CPU-like devices (lavapipe's default) or for GPUs.
class vulkan_kquant : public ::testing::TestWithParam<const char*> {
 protected:
    void SetUp() override {
        be_ = make(nullptr);
        if (!be_) GTEST_SKIP() << why_;
    }
    // A backend for this parameter, with TANDEM_VULKAN_LOOP_BUDGET = budget when given.
    std::unique_ptr<backend> make(const char* budget) {
        scoped_env staging("TANDEM_VULKAN_FORCE_STAGING", staging_path() ? "1" : nullptr);
        scoped_env kernels("TANDEM_VULKAN_KERNELS", kernel_family());
        std::optional<scoped_env> loop;  // else the environment's, if any
        if (budget) loop.emplace("TANDEM_VULKAN_LOOP_BUDGET", budget);
        return test::try_backend("vulkan", why_);
    }
    bool staging_path() const { return std::string(GetParam()).rfind("staging", 0) == 0; }
    const char* kernel_family() const {
        return std::string(GetParam()).find("_cpu") != std::string::npos ? "cpu" : "gpu";
    }
    std::string trace(const std::string& what) const {
        return what + " [" + GetParam() + ", seed " + std::to_string(test::test_seed()) + "]";
    }

    std::mt19937_64 g_{test::test_seed()};
    std::unique_ptr<backend> be_;
    std::string why_;
};

INSTANTIATE_TEST_SUITE_P(memory, vulkan_kquant,
                         ::testing::Values("direct_cpu", "staging_cpu", "direct_gpu", "staging_gpu"),
                         [](const auto& info) { return std::string(info.param); });

// Weights at every even offset inside a 16-byte texel (Q4_K blocks then start off a word boundary, Q6_K blocks
// alternate; R0 of the texel shader), activations 16-byte aligned (texel path) or not (storage path). K: one
// super-block, a few, and 4096 (every lane of the matrix-vector shader busy); N from 1 to past a 64-row tile; M from
// decode through the 8-row chunks (1, 5, 8, 9, 17) to the tiled path (33, 300).
TEST_P(vulkan_kquant, matmul_offsets_and_shapes) {
    struct shape {
        int64_t k, n, m;
    };
    std::vector<shape> shapes = {{256, 1, 1},   {256, 7, 5},   {768, 33, 8},  {512, 65, 9},
                                 {1280, 3, 17}, {4096, 33, 1}, {4096, 5, 33}, {256, 130, 300}};
    shapes.push_back({256 * int64_t(g_() % 12 + 1), int64_t(g_() % 150) * 2 + 1, int64_t(g_() % 40) + 1});
    const size_t w_offsets[] = {16, 18, 20, 22, 26, 30, 34, 258};
    size_t i = 0;
    for (dtype wt : {dtype::q4_k, dtype::q6_k}) {
        for (const auto& s : shapes) {
            const size_t w_off = w_offsets[i % 8], x_off = i % 3 == 2 ? 20 : 16;
            ++i;
            const double err =
                max_error_at(*be_, {quantized(g_, wt, s.k, s.n), f32_tensor(g_, s.k, s.m), zeros(s.n, s.m)},
                             {w_off, x_off, 16}, {2}, matmul_op);
            EXPECT_LE(err, tolerance(s.k))
                << trace("matmul_" + std::string(dtype_name(wt)) + "_f32 K=" + std::to_string(s.k) +
                         " N=" + std::to_string(s.n) + " M=" + std::to_string(s.m) + " w at byte " +
                         std::to_string(w_off) + ", x at byte " + std::to_string(x_off));
        }
    }
}

// Rows of 5,242,880 weights (M = 1: the rows / texel shaders loop K / 64 = 81,920 times, the matrix-vector one
// K / 2,048) and 2,621,440 (M = 9: the tiled shader loops K / 32 = 81,920 times): without the host's split-K
// every one of those invocations would stop silently after 65,535 iterations on lavapipe and drop a fifth of the sum
// (checked: with TANDEM_VULKAN_LOOP_BUDGET=100000000 this test fails). The M = 9 shape runs on the direct memory path
// only: the tiled shader takes ~1 minute per type on lavapipe, and the memory path does not change the loop counts.
TEST_P(vulkan_kquant, rows_past_the_loop_limit) {
    for (dtype wt : {dtype::q4_k, dtype::q6_k}) {
        for (auto [k, m] : {std::pair<int64_t, int64_t>{5242880, 1}, {2621440, 9}}) {
            if (m > 1 && staging_path()) continue;
            const double err = max_error_at(*be_, {random_blocks(g_, wt, k, 3), f32_tensor(g_, k, m), zeros(3, m)},
                                            {16, 16, 16}, {2}, matmul_op);
            EXPECT_LE(err, tolerance(k)) << trace("matmul_" + std::string(dtype_name(wt)) +
                                                  "_f32 K=" + std::to_string(k) + " N=3 M=" + std::to_string(m));
        }
    }
}

// A loop budget of 70 (6 iterations per dispatch) cuts K into single super-blocks on every path (rows / texel:
// 4 iterations each, tiled: 8, matrix-vector: one); each dispatch adds to out.
TEST_P(vulkan_kquant, splits_forced_by_a_small_loop_budget) {
    auto small = make("70");
    ASSERT_TRUE(small) << why_;
    for (dtype wt : {dtype::q4_k, dtype::q6_k}) {
        for (int64_t m : {1, 9, 17}) {
            for (int64_t k : {2560, 4096}) {
                const double err = max_error_at(*small, {quantized(g_, wt, k, 5), f32_tensor(g_, k, m), zeros(5, m)},
                                                {18, 16, 16}, {2}, matmul_op);
                EXPECT_LE(err, tolerance(k)) << trace("split-K matmul_" + std::string(dtype_name(wt)) +
                                                      " K=" + std::to_string(k) + " M=" + std::to_string(m));
            }
        }
    }
}

// The decode is the reference's f32 expression of exact products: bit-identical to cpu_ref, at every even offset,
// for the first, last and middle rows of small and 4,099-row tables.
TEST_P(vulkan_kquant, get_rows_bit_exact) {
    for (dtype wt : {dtype::q4_k, dtype::q6_k}) {
        for (auto [k, rows] : {std::pair<int64_t, int64_t>{256, 4099}, {768, 7}, {4096, 5}}) {
            const std::vector<int32_t> ids = {int32_t(rows - 1), 0, int32_t(rows / 2), int32_t(rows - 1)};
            host_tensor hi{dtype::i32, {4, 1, 1, 1}, std::vector<uint8_t>(16)};
            std::memcpy(hi.bytes.data(), ids.data(), 16);
            const host_tensor table = quantized(g_, wt, k, rows);
            for (size_t off : {16, 18, 22}) {
                EXPECT_EQ(max_error_at(*be_, {table, hi, zeros(k, 4)}, {off, 16, 16}, {2},
                                       [](backend& b, const std::vector<tensor>& t) { b.get_rows(t[0], t[1], t[2]); }),
                          0)
                    << trace("get_rows_" + std::string(dtype_name(wt)) + "_f32 K=" + std::to_string(k) +
                             " rows=" + std::to_string(rows) + " at byte " + std::to_string(off));
            }
        }
    }
}

// Every K-quant shader variant (rows, texel, matrix-vector, tiled, get_rows) under the Khronos validation layer, on
// both memory paths: results still right, and no validation message.
TEST(vulkan_kquant_validation, shaders_report_no_errors) {
    if (!vulkan_validation_available())
        GTEST_SKIP() << "VK_LAYER_KHRONOS_validation is not installed (vulkan-validationlayers)";
    scoped_env env("TANDEM_VULKAN_VALIDATION", "1");
    const uint64_t before = vulkan_validation_errors();
    std::mt19937_64 g(5);
    for (const char* config : {"0cpu", "1cpu", "0gpu", "1gpu"}) {  // memory path x kernel family
        scoped_env path("TANDEM_VULKAN_FORCE_STAGING", config[0] == '1' ? "1" : "0");
        scoped_env kernels("TANDEM_VULKAN_KERNELS", config + 1);
        std::string why;
        auto be = test::try_backend("vulkan", why);
        if (!be) GTEST_SKIP() << why;
        for (dtype wt : {dtype::q4_k, dtype::q6_k}) {
            for (int64_t m : {1, 9}) {
                for (size_t x_off : {16, 20}) {  // texel and storage activations (CPU family)
                    EXPECT_LE(max_error_at(*be, {quantized(g, wt, 512, 7), f32_tensor(g, 512, m), zeros(7, m)},
                                           {18, x_off, 16}, {2}, matmul_op),
                              tolerance(512))
                        << config << " " << dtype_name(wt) << " M=" << m;
                }
            }
            host_tensor ids{dtype::i32, {2, 1, 1, 1}, std::vector<uint8_t>(8, 0)};
            ids.bytes[0] = 4;
            EXPECT_EQ(max_error_at(*be, {quantized(g, wt, 256, 5), ids, zeros(256, 2)}, {18, 16, 16}, {2},
                                   [](backend& b, const std::vector<tensor>& t) { b.get_rows(t[0], t[1], t[2]); }),
                      0);
        }
    }
    EXPECT_EQ(vulkan_validation_errors() - before, 0u) << "see the validation messages logged above";
}

// ---- end to end: a synthetic model with rows of 256 and 768 quantized by quantize_model ----

class vulkan_kquant_e2e : public ::testing::Test {
 protected:
    // The shape of tests/test_kquant.cpp's kquant_model: every matrix row is whole 256-weight super-blocks, so
    // nothing falls back (stories260K's rows of 64 would).
    static void SetUpTestSuite() {
        dir_ = std::filesystem::temp_directory_path() / ("tandem_test_vulkan_kquant_" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir_);
        synth_shape o;
        o.n_embd = 256, o.n_layer = 4, o.n_head = 4, o.n_head_kv = 2, o.n_ff = 768, o.n_vocab = 512, o.n_ctx = 128;
        synth_model(synth_resolve_shape("", o), dtype::f32, 7, path("f32"));
        for (const char* t : {"q4_k", "q4_k_m"}) {
            const quantize_result r = quantize_model(path("f32"), path(t), *parse_quant_target(t), false);
            fallbacks_ += r.fallbacks.size();
        }
    }
    static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
    static std::string path(const std::string& name) { return (dir_ / ("k256_" + name + ".gguf")).string(); }

    static inline std::filesystem::path dir_;
    static inline size_t fallbacks_ = 0;
};

// 64 greedy tokens from BOS on vulkan (both kernel families, both memory paths) against cpu_ref, which multiplies
// the same exactly dequantized weights in another order: the same tokens and logits within 1e-3
// (test::expect_greedy_agrees). q4_k_m mixes q6_k into attn_v, ffn_down and the output projection.
TEST_F(vulkan_kquant_e2e, greedy_tokens_match_cpu_ref) {
    ASSERT_EQ(fallbacks_, 0u);
    const int n = 64;
    for (const char* t : {"q4_k", "q4_k_m"}) {
        const auto want = test::greedy_with_logits(*model::load(path(t), make_backend("cpu_ref")), n);
        for (const char* kernels : {"cpu", "gpu"}) {
            for (const char* staging : {"0", "1"}) {
                scoped_env k("TANDEM_VULKAN_KERNELS", kernels);
                scoped_env s("TANDEM_VULKAN_FORCE_STAGING", staging);
                std::string why;
                auto be = test::try_backend("vulkan", why);
                if (!be) GTEST_SKIP() << why;
                const auto got = test::greedy_with_logits(*model::load(path(t), std::move(be)), n);
                test::expect_greedy_agrees(
                    got, want,
                    std::string(t) + " (" + kernels + " kernels, " + (staging[0] == '1' ? "staging" : "direct") + ")");
            }
        }
    }
}

}  // namespace
}  // namespace tandem
#endif  // TANDEM_WITH_VULKAN
