// The OpenCL backend end to end on real and quantized models: the stories260K greedy story and perplexity (f32),
// stories260K quantized to q8_0 / q4_0 against cpu_ref and cpu, and a synthetic 256-wide model in q4_k / q4_k_m
// against cpu_ref. SKIPPED, with the reason, where no OpenCL platform exists. (The ops one by one and the program
// cache: test_opencl.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/quantize_model.h"
#include "engine/session.h"
#include "engine/synth.h"
#include "tests/common/test_util.h"
#if TANDEM_WITH_OPENCL
#include "backends/opencl/opencl.h"
#endif

namespace tandem {
namespace {

#if !TANDEM_WITH_OPENCL
TEST(opencl_e2e, not_built) { GTEST_SKIP() << "this build has no OpenCL backend (TANDEM_OPENCL=OFF)"; }
#else

#define TANDEM_OPENCL_OR_SKIP(var)                     \
    std::string var##_why;                             \
    auto var = test::try_backend("opencl", var##_why); \
    if (!var) GTEST_SKIP() << var##_why

// ---- (c) end to end on the real model ----

TEST(opencl_e2e, stories260k_greedy_story_matches_llama2c) {
    TANDEM_OPENCL_OR_SKIP(be);
    auto m = model::load(test::model_path("stories260K.gguf"), std::move(be));
    std::string expected = test::read_file(test::model_path("stories260K_greedy.txt"));
    while (!expected.empty() && (expected.back() == '\n' || expected.back() == ' ')) expected.pop_back();
    const std::string got = test::greedy_story(*m, 256);  // prefix comparison: one spare step is harmless
    EXPECT_EQ(got.substr(0, expected.size()), expected) << "full output:\n" << got;
}

// The standard protocol (first 60,000 characters, window 255): 1.5379 nats/token from an independent numpy
// implementation (models/README.md); OpenCL must agree with it and with cpu_ref within 0.1%.
TEST(opencl_e2e, perplexity_matches_reference_and_cpu_ref) {
    TANDEM_OPENCL_OR_SKIP(be);
    const std::string text = test::read_file(test::model_path("tinystories_valid_head.txt")).substr(0, 60000);
    auto m = model::load(test::model_path("stories260K.gguf"), std::move(be));
    const auto r = perplexity(*m, text, 255);
    auto m_ref = model::load(test::model_path("stories260K.gguf"), make_backend("cpu_ref"));
    const auto r_ref = perplexity(*m_ref, text, 255);
    EXPECT_EQ(r.n_tokens, r_ref.n_tokens);
    EXPECT_NEAR(r.mean_nll(), 1.5379, 1.5379 * 0.001);
    EXPECT_NEAR(r.mean_nll(), r_ref.mean_nll(), r_ref.mean_nll() * 0.001);
}

// ---- (d) quantized models end to end: stories260K through quantize_model ----

// stories260K quantized once per process (tests/common/test_util).
class opencl_quant_e2e : public ::testing::Test {
 protected:
    static std::string path(dtype t) { return test::quantized_stories260k(std::string(dtype_name(t)).c_str()); }
};

// 128 greedy tokens of the q8_0 and q4_0 models on OpenCL against cpu_ref: the same tokens, and the logits close
// at every step; a divergence is accepted only at a near-tie of cpu_ref's two best logits, and is reported.
// - Exact kernels (Q8_0; Q4_0 on GPUs): the same products as cpu_ref (exact dequantization, f32 activations) in
//   another order, so logits within 1e-3 (they reach ~15; summation order moves them by ~1e-5).
// - Q4_0 on a CPU-class device quantizes the activations to 8 bits as the cpu backend does
//   (kernels/mul_mv_q4_0_g16.cl): the logits move by ~0.3 against cpu_ref, and the two backends' roundings
//   drift apart over the steps (a last-bit difference elsewhere flips an activation's rounding), so the bound
//   is twice cpu's own distance from cpu_ref in the same test.
TEST_F(opencl_quant_e2e, stories260k_greedy_matches_cpu_ref) {
    const int n = 128;
    for (dtype t : {dtype::q8_0, dtype::q4_0}) {
        TANDEM_OPENCL_OR_SKIP(be);
        const auto want = test::greedy_with_logits(*model::load(path(t), make_backend("cpu_ref")), n);
        double tol = 1e-3;
        if (t == dtype::q4_0 && opencl_gemv_variant(*be) == "row") {
            const auto cpu = test::greedy_with_logits(*model::load(path(t), make_backend("cpu")), n);
            tol = std::max(tol, 2 * test::expect_greedy_agrees(cpu, want, "q4_0 on cpu (the bound's reference)", 1.0));
        }
        const auto got = test::greedy_with_logits(*model::load(path(t), std::move(be)), n);
        test::expect_greedy_agrees(got, want, std::string(dtype_name(t)), tol);
    }
}

// Perplexity of the q8_0 model (first 60,000 characters, window 255) within 0.1% of cpu_ref's and of cpu's
// (which also quantizes the activations to 8 bits, backends/cpu/cpu_matmul_quant.cpp).
TEST_F(opencl_quant_e2e, stories260k_q8_0_perplexity_matches_cpu) {
    TANDEM_OPENCL_OR_SKIP(be);
    const std::string text = test::read_file(test::model_path("tinystories_valid_head.txt")).substr(0, 60000);
    const auto r = perplexity(*model::load(path(dtype::q8_0), std::move(be)), text, 255);
    for (const char* ref_name : {"cpu_ref", "cpu"}) {
        const auto c = perplexity(*model::load(path(dtype::q8_0), make_backend(ref_name)), text, 255);
        EXPECT_EQ(r.n_tokens, c.n_tokens);
        EXPECT_NEAR(r.perplexity(), c.perplexity(), c.perplexity() * 0.001) << ref_name;
        std::printf("[ info     ] q8_0 perplexity: opencl %.6f (%.2f s), %s %.6f (%.2f s), %lld tokens\n",
                    r.perplexity(), r.seconds, ref_name, c.perplexity(), c.seconds, static_cast<long long>(r.n_tokens));
    }
}

// ---- (e) K-quant models end to end: a synthetic model with 256-multiple rows through quantize_model ----

// stories260K's 64-wide rows would fall back from the K-quants, so: a synth model of dim 256 / ffn 768 (as
// tests/test_kquant.cpp's kquant_model), quantized to q4_k (every matrix Q4_K, the embedding table too) and q4_k_m
// (Q6_K output, attn_v and ffn_down of the upper layers, the rest Q4_K).
class opencl_kquant_e2e : public ::testing::Test {
 protected:
    static void SetUpTestSuite() {
        dir_ = std::filesystem::temp_directory_path() / ("tandem_test_ocl_kquant_" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir_);
        synth_shape o;
        o.n_embd = 256, o.n_layer = 4, o.n_head = 4, o.n_head_kv = 2, o.n_ff = 768, o.n_vocab = 512, o.n_ctx = 256;
        synth_model(synth_resolve_shape("", o), dtype::f32, 7, path("f32"));
        for (const char* t : {"q4_k", "q4_k_m"}) quantize_model(path("f32"), path(t), *parse_quant_target(t), false);
    }
    static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
    static std::string path(const std::string& name) { return (dir_ / ("k256_" + name + ".gguf")).string(); }
    static inline std::filesystem::path dir_;
};

// 128 greedy tokens from BOS (one row per step: the GEMV kernels) and the logits of every position of a 24-token
// prompt fed at once (24 rows: the matrix-matrix kernels), on OpenCL against cpu_ref with the same file. Both
// decode the weights exactly and keep f32 activations, so only summation order differs: the same tokens, logits
// within 1e-3 (test::expect_greedy_agrees; observed differences are ~1e-6).
TEST_F(opencl_kquant_e2e, greedy_and_prefill_match_cpu_ref) {
    for (const char* t : {"q4_k", "q4_k_m"}) {
        TANDEM_OPENCL_OR_SKIP(be);
        auto m = model::load(path(t), std::move(be));
        auto m_ref = model::load(path(t), make_backend("cpu_ref"));
        test::expect_greedy_agrees(test::greedy_with_logits(*m, 128), test::greedy_with_logits(*m_ref, 128), t);
        std::vector<int32_t> prompt = {1};
        for (int i = 0; i < 23; ++i) prompt.push_back(int32_t(3 + (i * 97) % 500));
        std::vector<float> got, want;
        sampling_params sp;
        sp.temperature = 0;
        session(*m, sp, 64).feed(prompt, &got);
        session(*m_ref, sp, 64).feed(prompt, &want);
        ASSERT_EQ(got.size(), want.size()) << t;
        ASSERT_EQ(want.size(), prompt.size() * 512) << t;
        double worst = 0;
        for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - want[i])));
        EXPECT_LE(worst, 1e-3) << t << ": prefill logits";
        std::printf("[ info     ] %s prefill of %zu tokens: max logit difference %.2e\n", t, prompt.size(), worst);
    }
}

#endif  // TANDEM_WITH_OPENCL

}  // namespace
}  // namespace tandem
