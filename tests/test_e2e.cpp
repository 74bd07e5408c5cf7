// End-to-end checks on the real bundled models, on every CPU backend: llama2.c's greedy stories260K story
// word for word, the perplexity protocol's figures, and coherent text from the converted llama2xs model.
#include <gtest/gtest.h>

#include <string>

#include "backends/backend.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/session.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

class e2e : public ::testing::TestWithParam<std::string> {};

// Source: karpathy/llama2.c doc/stories260K.md, `./run stories260K.bin -z tok512.bin -t 0.0` (256 steps),
// copied to models/stories260K_greedy.txt: 256 generated tokens.
TEST_P(e2e, stories260k_greedy_story_matches_llama2c) {
    auto m = model::load(test::model_path("stories260K.gguf"), make_backend(GetParam()));
    std::string expected = test::read_file(test::model_path("stories260K_greedy.txt"));
    while (!expected.empty() && (expected.back() == '\n' || expected.back() == ' ')) expected.pop_back();
    const std::string got = test::greedy_story(*m, 256);
    EXPECT_EQ(got, expected);
}

// Reference figures from an independent numpy implementation of the same protocol (models/README.md):
// 28,769 scored tokens, 1.5379 nats/token for stories260K; 2.1430 for llama2xs. We must agree within 0.2%.
TEST_P(e2e, perplexity_stories260k) {
    auto m = model::load(test::model_path("stories260K.gguf"), make_backend(GetParam()));
    const std::string text = test::read_file(test::model_path("tinystories_valid_head.txt")).substr(0, 60000);
    const auto r = perplexity(*m, text, 255);
    EXPECT_EQ(r.n_tokens, 28769);
    EXPECT_EQ(r.n_windows, 113);
    EXPECT_NEAR(r.mean_nll(), 1.5379, 1.5379 * 0.002);
    EXPECT_NEAR(r.perplexity(), 4.655, 4.655 * 0.004);
}

TEST_P(e2e, perplexity_llama2xs_converted) {
    auto m = model::load(test::model_path("llama2xs_tinystories_279K.gguf"), make_backend(GetParam()));
    const std::string text = test::read_file(test::model_path("tinystories_valid_head.txt")).substr(0, 60000);
    const auto r = perplexity(*m, text, 255);
    EXPECT_EQ(r.n_tokens, 28769);
    EXPECT_NEAR(r.mean_nll(), 2.1430, 2.1430 * 0.002);
}

// The converted second model writes TinyStories English: its greedy start is known (models/README.md).
TEST_P(e2e, llama2xs_converted_generates_coherent_text) {
    auto m = model::load(test::model_path("llama2xs_tinystories_279K.gguf"), make_backend(GetParam()));
    const std::string got = test::greedy_story(*m, 120);
    EXPECT_EQ(got.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside", 0), 0u)
        << got;
    EXPECT_GT(got.size(), 300u) << got;
}

INSTANTIATE_TEST_SUITE_P(cpu_backends, e2e, ::testing::Values("cpu_ref", "cpu"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
