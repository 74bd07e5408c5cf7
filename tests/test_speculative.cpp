// Speculative decoding end to end on the real pair (target stories260K, draft llama2xs converted) and with
// self-speculation: greedy output must be token-identical to target-only greedy decoding for every strategy
// on every CPU backend, sampled output must follow the target's distribution, mismatched vocabularies are
// refused by name.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "backends/backend.h"
#include "engine/error.h"
#include "engine/llama2c.h"
#include "engine/session.h"
#include "engine/speculative.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

// 20 prompts: the first words of the first paragraphs of the TinyStories sample.
std::vector<std::string> prompts() {
    const std::string text = test::read_file(test::model_path("tinystories_valid_head.txt"));
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string line;
    while (out.size() < 20 && std::getline(in, line)) {
        if (line.size() < 40) continue;
        std::istringstream words(line);
        std::string w, p;
        for (int i = 0; i < 6 && words >> w; ++i) p += (i ? " " : "") + w;
        out.push_back(p);
    }
    return out;
}

std::vector<int32_t> target_only_greedy(const model& m, const std::vector<int32_t>& prompt, size_t n) {
    sampling_params sp;
    sp.temperature = 0;
    session s(m, sp, 256);
    s.feed(prompt);
    std::vector<int32_t> out;
    while (out.size() < n) out.push_back(s.step());
    return out;
}

std::vector<int32_t> speculative_greedy(const model& target, const model& draft, const draft_config& cfg,
                                        const std::vector<int32_t>& prompt, size_t n, verify_stats* stats = nullptr) {
    sampling_params sp;
    sp.temperature = 0;
    speculative_generator g(target, draft, cfg, sp, 256);
    g.start(prompt);
    std::vector<int32_t> out;
    while (out.size() < n) {
        const auto t = g.step();
        out.insert(out.end(), t.begin(), t.end());
    }
    out.resize(n);
    if (stats) *stats = g.stats();
    return out;
}

class speculative : public ::testing::TestWithParam<std::string> {
   protected:
    void SetUp() override {
        target_ = model::load(test::model_path("stories260K.gguf"), make_backend(GetParam()));
        draft_ = model::load(test::model_path("llama2xs_tinystories_279K.gguf"), make_backend(GetParam()));
    }
    std::unique_ptr<model> target_, draft_;
};

TEST_P(speculative, greedy_output_equals_target_only_for_every_strategy) {
    const auto ps = prompts();
    ASSERT_GE(ps.size(), 20u);
    std::vector<draft_config> cfgs(5);
    cfgs[0].strategy = draft_strategy::chain, cfgs[0].max_len = 4;
    cfgs[1].strategy = draft_strategy::chain, cfgs[1].max_len = 8, cfgs[1].adaptive = false;
    cfgs[2].strategy = draft_strategy::tree, cfgs[2].branching = {4, 2, 2, 1};
    cfgs[3].strategy = draft_strategy::dynamic, cfgs[3].budget = 24;
    cfgs[4].strategy = draft_strategy::self, cfgs[4].exit_layer = 2, cfgs[4].max_len = 4;
    const size_t n = 32;
    std::vector<uint64_t> passes(cfgs.size()), tokens(cfgs.size());
    for (const auto& p : ps) {
        const auto prompt = target_->tokenizer().encode(p, true);
        const auto want = target_only_greedy(*target_, prompt, n);
        for (size_t c = 0; c < cfgs.size(); ++c) {
            const model& d = cfgs[c].strategy == draft_strategy::self ? *target_ : *draft_;
            verify_stats st;
            EXPECT_EQ(speculative_greedy(*target_, d, cfgs[c], prompt, n, &st), want)
                << "prompt '" << p << "', strategy " << int(cfgs[c].strategy);
            passes[c] += st.passes, tokens[c] += st.tokens;
        }
    }
    // The drafts must actually be used: well over one token per target pass on average.
    // Self-speculation with 2 of 5 layers is a weak draft: it must still be accepted sometimes.
    for (size_t c = 0; c < cfgs.size(); ++c) {
        const double min_ratio = cfgs[c].strategy == draft_strategy::self ? 1.01 : 1.3;
        EXPECT_GT(double(tokens[c]) / double(passes[c]), min_ratio) << "config " << c;
    }
}

// Sampling: the first two tokens after a prompt, over many seeds, against the target's exact distribution
// (top-k 4 keeps the support small enough for a chi-square test). The rule is backend-independent host code,
// so this runs on `cpu` only.
TEST(speculative_sampling, sampled_tokens_follow_the_target_distribution) {
    auto target_ = model::load(test::model_path("stories260K.gguf"), make_backend("cpu"));
    auto draft_ = model::load(test::model_path("llama2xs_tinystories_279K.gguf"), make_backend("cpu"));
    sampling_params sp;
    sp.temperature = 1.0f, sp.top_k = 4, sp.top_p = 1.f, sp.min_p = 0.f;
    const auto prompt = target_->tokenizer().encode("Once upon a time, there was a", true);
    // Exact target distribution of (x1, x2).
    std::map<std::pair<int, int>, double> want;
    {
        session s(*target_, sp, 64);
        s.feed(prompt);
        const auto d1 = s.sampler().distribution(s.last_logits(), s.tokens());
        for (const auto& e1 : d1) {
            s.truncate(prompt.size());
            const int32_t x1[1] = {e1.token};
            s.feed(x1);
            for (const auto& e2 : s.sampler().distribution(s.last_logits(), s.tokens()))
                want[{e1.token, e2.token}] = double(e1.p) * e2.p;
        }
    }
    draft_config cfg;
    cfg.strategy = draft_strategy::tree;
    cfg.branching = {2, 2};
    const int n = 2000;
    std::map<std::pair<int, int>, int> got;
    const uint64_t seed0 = test::test_seed();
    for (int i = 0; i < n; ++i) {
        sp.seed = seed0 + uint64_t(i);
        speculative_generator g(*target_, *draft_, cfg, sp, 64);
        g.start(prompt);
        std::vector<int32_t> out;
        while (out.size() < 2) {
            const auto t = g.step();
            out.insert(out.end(), t.begin(), t.end());
        }
        ++got[{out[0], out[1]}];
    }
    double chi2 = 0;
    int cells = 0;
    for (const auto& [k, p] : want) {
        const double e = p * n;
        const double o = got.count(k) ? got[k] : 0;
        if (e >= 5) chi2 += (o - e) * (o - e) / e, ++cells;
    }
    for (const auto& [k, c] : got) EXPECT_TRUE(want.count(k)) << "token pair outside the target's support";
    // 16 cells at most: with 15 degrees of freedom, p = 0.001 at 37.7.
    EXPECT_LT(chi2, 37.7) << cells << " cells, seed " << seed0;
}

INSTANTIATE_TEST_SUITE_P(cpu_backends, speculative, ::testing::Values("cpu_ref", "cpu"),
                         [](const auto& info) { return info.param; });

TEST(speculative_pairing, vocabulary_mismatch_is_refused_naming_both_models) {
    const std::string aidreams = ::testing::TempDir() + "/aidreams260K.gguf";
    convert_llama2c(test::model_path("aidreams260K.bin"), test::model_path("aidreams_tok512.bin"), aidreams,
                    "aidreams260K");
    auto target = model::load(test::model_path("stories260K.gguf"), make_backend("cpu"));
    auto draft = model::load(aidreams, make_backend("cpu"));
    try {
        check_vocab_match(*draft, "aidreams260K", *target, "stories260K");
        FAIL() << "mismatch accepted";
    } catch (const error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("aidreams260K"), std::string::npos) << msg;
        EXPECT_NE(msg.find("stories260K"), std::string::npos) << msg;
        EXPECT_NE(msg.find("vocabulary"), std::string::npos) << msg;
    }
    auto same = model::load(test::model_path("llama2xs_tinystories_279K.gguf"), make_backend("cpu"));
    EXPECT_NO_THROW(check_vocab_match(*same, "llama2xs", *target, "stories260K"));
}

}  // namespace
}  // namespace tandem
