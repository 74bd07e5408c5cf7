// The public C API (engine/tandem.h): status codes and messages at the boundary, buffer protocols, and a
// full generation through it. The CLI is exercised as a user would run it, through its binary.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "engine/tandem.h"
#include "tests/common/test_util.h"

namespace {

struct model_handle {
    tandem_model* m = nullptr;
    ~model_handle() { tandem_model_free(m); }
};

TEST(api, load_describe_tokenize_generate) {
    model_handle h;
    tandem_model_params mp = tandem_model_default_params();
    mp.backend = "cpu_ref";
    ASSERT_EQ(tandem_model_load(tandem::test::model_path("stories260K.gguf").c_str(), &mp, &h.m), TANDEM_OK)
        << tandem_last_error();
    tandem_model_desc d;
    ASSERT_EQ(tandem_model_describe(h.m, &d), TANDEM_OK);
    EXPECT_EQ(d.n_vocab, 512);
    EXPECT_EQ(d.n_layer, 5);
    EXPECT_EQ(d.n_head_kv, 4);
    EXPECT_NE(d.vocab_fingerprint, 0u);

    const std::string text = "Once upon a time";
    size_t n = 0;
    EXPECT_EQ(tandem_tokenize(h.m, text.data(), text.size(), 1, nullptr, 0, &n), TANDEM_ERR_BUFFER_TOO_SMALL);
    std::vector<int32_t> toks(n);
    ASSERT_EQ(tandem_tokenize(h.m, text.data(), text.size(), 1, toks.data(), toks.size(), &n), TANDEM_OK);
    EXPECT_EQ(toks[0], 1);
    EXPECT_EQ(toks[1], 403);  // " Once" in tok512, as in the greedy reference ids

    tandem_sampling_params sp = tandem_sampling_default_params();
    sp.temperature = 0;
    tandem_session* s = nullptr;
    ASSERT_EQ(tandem_session_open(h.m, &sp, &s), TANDEM_OK);
    ASSERT_EQ(tandem_session_feed(s, toks.data(), toks.size()), TANDEM_OK);
    int32_t t = 0;
    ASSERT_EQ(tandem_session_step(s, &t), TANDEM_OK);
    EXPECT_EQ(tandem_session_length(s), toks.size() + 1);
    tandem_timings tm;
    ASSERT_EQ(tandem_session_timings(s, &tm), TANDEM_OK);
    EXPECT_EQ(tm.prompt_tokens, toks.size());
    EXPECT_EQ(tm.gen_tokens, 1u);
    char piece[32];
    size_t np = 0;
    EXPECT_EQ(tandem_token_to_piece(h.m, t, 9999, piece, sizeof piece, &np), TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(tandem_last_error()).find("9999"), std::string::npos) << tandem_last_error();
    const int32_t bad[1] = {600};
    EXPECT_EQ(tandem_session_feed(s, bad, 1), TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(tandem_session_length(s), toks.size() + 1);  // a refused feed loses nothing
    tandem_session_free(s);
}

TEST(api, errors_are_statuses_with_messages) {
    tandem_model* m = nullptr;
    EXPECT_EQ(tandem_model_load("/nonexistent/model.gguf", nullptr, &m), TANDEM_ERR_IO);
    EXPECT_NE(std::string(tandem_last_error()).find("/nonexistent/model.gguf"), std::string::npos);
    EXPECT_EQ(m, nullptr);
    EXPECT_EQ(tandem_model_load(nullptr, nullptr, &m), TANDEM_ERR_INVALID_ARGUMENT);
    tandem_model_params mp = tandem_model_default_params();
    mp.backend = "tpu";
    EXPECT_EQ(tandem_model_load(tandem::test::model_path("stories260K.gguf").c_str(), &mp, &m),
              TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(tandem_last_error()).find("cpu_ref"), std::string::npos) << tandem_last_error();
    // A llama2.c checkpoint is not a GGUF file.
    EXPECT_EQ(tandem_model_load(tandem::test::model_path("stories260K.bin").c_str(), nullptr, &m), TANDEM_ERR_FORMAT);
    EXPECT_NE(std::string(tandem_last_error()).find("magic"), std::string::npos) << tandem_last_error();
    EXPECT_STREQ(tandem_status_name(TANDEM_ERR_CONTEXT_FULL), "context full");
}

using tandem::test::run_cli;

TEST(cli, help_lists_every_subcommand_and_option) {
    auto [code, out] = run_cli("--help");
    EXPECT_EQ(code, 0) << out;
    for (const char* sub : {"generate", "info", "perplexity", "convert"}) EXPECT_NE(out.find(sub), std::string::npos) << sub;
    std::tie(code, out) = run_cli("generate --help");
    EXPECT_EQ(code, 0);
    for (const char* opt : {"--model", "--prompt", "--n-predict", "--temp", "--top-k", "--top-p", "--min-p", "--seed",
                            "--backend", "--threads", "--repeat-penalty"}) {
        EXPECT_NE(out.find(opt), std::string::npos) << opt;
    }
}

TEST(cli, generate_with_no_arguments_tells_a_story) {
    auto [code, out] = run_cli("generate -n 40 --seed 1");
    EXPECT_EQ(code, 0) << out;
    EXPECT_NE(out.find("tokens/s"), std::string::npos) << out;
    EXPECT_GT(out.size(), 100u);
}

TEST(cli, greedy_generation_is_the_reference_story_on_both_backends) {
    for (const char* be : {"cpu_ref", "cpu"}) {
        auto [code, out] = run_cli(std::string("generate --temp 0 -n 30 --no-timings -b ") + be);
        EXPECT_EQ(code, 0) << out;
        EXPECT_EQ(out.rfind("Once upon a time, there was a little girl named Lily.", 0), 0u) << be << ": " << out;
    }
}

TEST(cli, info_prints_metadata_tensors_and_fingerprint) {
    auto [code, out] = run_cli("info " + tandem::test::model_path("stories260K.gguf"));
    EXPECT_EQ(code, 0) << out;
    for (const char* s : {"general.architecture", "llama.block_count", "blk.4.ffn_down.weight", "fingerprint"}) {
        EXPECT_NE(out.find(s), std::string::npos) << s;
    }
}

TEST(cli, perplexity_prints_nats_per_token) {
    auto [code, out] = run_cli("perplexity -f " + tandem::test::model_path("tinystories_valid_head.txt") +
                               " --chars 3000");
    EXPECT_EQ(code, 0) << out;
    EXPECT_NE(out.find("nats/token"), std::string::npos) << out;
}

TEST(cli, bad_input_gives_a_clear_error_not_a_crash) {
    auto [code, out] = run_cli("generate -m /nonexistent.gguf");
    EXPECT_EQ(code, 1);
    EXPECT_NE(out.find("tandem: error"), std::string::npos) << out;
    // A truncated model file.
    const std::string full = tandem::test::read_file(tandem::test::model_path("stories260K.gguf"));
    const std::string cut = ::testing::TempDir() + "/truncated.gguf";
    std::ofstream(cut, std::ios::binary) << full.substr(0, full.size() / 2);
    std::tie(code, out) = run_cli("generate -m " + cut);
    EXPECT_EQ(code, 1) << out;
    EXPECT_NE(out.find("truncated"), std::string::npos) << out;
    std::tie(code, out) = run_cli("generate --backend nope");
    EXPECT_EQ(code, 1) << out;
    std::tie(code, out) = run_cli("frobnicate");
    EXPECT_NE(code, 0);
}

}  // namespace
