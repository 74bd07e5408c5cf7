// Tests of `tandem synth` (engine/synth.h): a tiny custom shape written in f32 and q8_0 loads with the right
// hyper-parameters and tensor types, its synthetic tokenizer round-trips text, greedy generation runs with
// finite, varying logits, files are a pure function of the seed, and bad arguments are refused by name.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "backends/backend.h"
#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/session.h"
#include "engine/synth.h"
#include "engine/tandem.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

// The tiny shape: GQA (4 heads, 2 kv heads) and an FFN width (172) that is not whole Q8_0 blocks.
synth_shape tiny_overrides() {
    synth_shape o;
    o.n_embd = 64;
    o.n_layer = 2;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_ff = 172;
    o.n_vocab = 512;
    o.n_ctx = 128;
    return o;
}

class synth : public ::testing::Test {
 protected:
    static void SetUpTestSuite() {
        dir_ = std::filesystem::temp_directory_path() / ("tandem_test_synth_" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir_);
        const synth_shape s = synth_resolve_shape("", tiny_overrides());
        res_f32_ = synth_model(s, dtype::f32, 42, path("f32"));
        res_q8_ = synth_model(s, dtype::q8_0, 42, path("q8_0"));
    }
    static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
    static std::string path(const std::string& name) { return (dir_ / ("tiny_" + name + ".gguf")).string(); }

    static inline std::filesystem::path dir_;
    static inline synth_result res_f32_, res_q8_;
};

// Runs the CLI; returns exit code and captured stdout+stderr.
std::pair<int, std::string> run_cli(const std::string& args) {
    const std::string cmd = std::string(TANDEM_CLI_PATH) + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return {-1, "popen failed"};
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int st = pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// The message of the tandem::error f throws (status checked), or "" if it does not throw.
template <typename F>
std::string error_of(F&& f, tandem_status want = TANDEM_ERR_INVALID_ARGUMENT) {
    try {
        f();
    } catch (const error& e) {
        EXPECT_EQ(e.status(), want) << e.what();
        return e.what();
    }
    ADD_FAILURE() << "no error thrown";
    return "";
}

TEST_F(synth, tiny_shape_loads_with_its_hparams_and_tensor_types) {
    for (const char* type : {"f32", "q8_0"}) {
        SCOPED_TRACE(type);
        auto m = model::load(path(type), make_backend("cpu"));
        const auto& hp = m->hparams();
        EXPECT_EQ(hp.n_embd, 64);
        EXPECT_EQ(hp.n_layer, 2);
        EXPECT_EQ(hp.n_head, 4);
        EXPECT_EQ(hp.n_head_kv, 2);
        EXPECT_EQ(hp.n_ff, 172);
        EXPECT_EQ(hp.n_vocab, 512);
        EXPECT_EQ(hp.n_ctx_train, 128);
        EXPECT_EQ(hp.head_dim, 16);
        EXPECT_EQ(hp.n_rot, 16);
        const dtype want = std::string(type) == "f32" ? dtype::f32 : dtype::q8_0;
        const gguf_file& f = m->file();
        EXPECT_EQ(f.find_tensor("blk.1.attn_q.weight")->type, want);
        EXPECT_EQ(f.find_tensor("blk.1.attn_k.weight")->ne, (std::vector<int64_t>{64, 32}));
        EXPECT_EQ(f.find_tensor("token_embd.weight")->type, want);
        EXPECT_EQ(f.find_tensor("output.weight")->type, want);
        EXPECT_EQ(f.find_tensor("blk.0.ffn_norm.weight")->type, dtype::f32);
        EXPECT_EQ(f.find_tensor("blk.0.ffn_down.weight")->type, dtype::f32);  // rows of 172: not whole blocks
        EXPECT_EQ(f.get("general.architecture").as_string("a"), "llama");
        EXPECT_EQ(f.get("general.name").as_string("n"), "synth-d64-l2-h4-kv2-f172-v512");
        EXPECT_EQ(f.get("general.file_type").as_int("t"), want == dtype::f32 ? 0 : 7);
        EXPECT_EQ(f.get("tandem.synth.seed").as_int("s"), 42);
    }
    // 512*64*2 (embeddings, output) + 64 (output norm) + 2 layers * (64*64*2 + 64*32*2 + 172*64*3 + 64*2).
    const int64_t params = 512 * 64 * 2 + 64 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 172 * 64 * 3 + 64 * 2);
    EXPECT_EQ(res_f32_.n_params, params);
    EXPECT_EQ(res_q8_.n_params, params);
    EXPECT_EQ(res_f32_.n_tensors, 3 + 2 * 9);
    EXPECT_TRUE(res_f32_.fallbacks.empty());
    ASSERT_EQ(res_q8_.fallbacks.size(), 2u);
    EXPECT_NE(res_q8_.fallbacks[0].find("blk.0.ffn_down.weight: row length 172"), std::string::npos)
        << res_q8_.fallbacks[0];
    EXPECT_EQ(res_q8_.n_quantized, 2 + 2 * 6);  // token_embd, output, and 6 of the 7 matrices per layer
}

TEST_F(synth, tokenizer_round_trips_text) {
    auto m = model::load(path("q8_0"), make_backend("cpu"));
    const tokenizer& tok = m->tokenizer();
    EXPECT_EQ(tok.bos(), 1);
    EXPECT_EQ(tok.eos(), 2);
    for (const std::string text : {"Once upon a time, Lily saw the big dog and said: \"Thank you!\"",
                                   "h\xc3\xa9llo w\xc3\xb6rld \xe4\xb8\x96\xe7\x95\x8c 12345 \t\n~`", "x"}) {
        const auto ids = tok.encode(text, true);
        ASSERT_GE(ids.size(), 2u);
        EXPECT_EQ(ids[0], tok.bos());
        EXPECT_EQ(tok.decode(std::span(ids).subspan(1)), text);
    }
    // Word pieces merge: " the" is one token; with a full-size vocabulary, common words are.
    const auto the = tok.encode("the", false);
    ASSERT_EQ(the.size(), 1u);
    EXPECT_EQ(tok.get_vocab().tokens[size_t(the[0])], " the");
    const tokenizer big(synth_vocab(32000));
    EXPECT_EQ(big.encode("Once upon a time there was a little girl", false).size(), 9u);
}

TEST(synth_vocab, pieces_are_distinct_reachable_and_depend_on_size_only) {
    const vocab v = synth_vocab(32000);
    ASSERT_EQ(v.tokens.size(), 32000u);
    EXPECT_EQ(v.tokens[0], "<unk>");
    EXPECT_EQ(v.tokens[1], "<s>");
    EXPECT_EQ(v.tokens[2], "</s>");
    EXPECT_EQ(v.tokens[3], "<0x00>");
    EXPECT_EQ(v.tokens[258], "<0xFF>");
    EXPECT_EQ(v.types[258], int32_t(token_type::byte));
    EXPECT_EQ(v.tokens[259], " ");
    std::unordered_map<std::string, int32_t> ids;
    for (int32_t i = 0; i < 32000; ++i) {
        const std::string& t = v.tokens[size_t(i)];
        EXPECT_TRUE(ids.emplace(t, i).second) << "duplicate piece '" << t << "' at " << i;
        if (i < 259) continue;
        EXPECT_EQ(v.types[size_t(i)], int32_t(token_type::normal));
        EXPECT_EQ(v.scores[size_t(i)], -float(i - 259));
        EXPECT_EQ(t.find(' ', 1), std::string::npos) << t;  // the word marker only leads
        if (t.size() < 2) continue;
        bool reachable = false;  // some split into two earlier pieces
        for (size_t k = 1; k < t.size() && !reachable; ++k) {
            const auto l = ids.find(t.substr(0, k)), r = ids.find(t.substr(k));
            reachable = l != ids.end() && r != ids.end() && l->second >= 259 && r->second >= 259;
        }
        EXPECT_TRUE(reachable) << "piece " << i << " '" << t << "'";
    }
    EXPECT_EQ(synth_vocab(32000).tokens, v.tokens);
    EXPECT_EQ(tokenizer(synth_vocab(260)).n_vocab(), 260);
}

// Logits of a prompt: finite, varying across the vocabulary and across positions, close between f32 and q8_0;
// then greedy generation runs.
TEST_F(synth, generation_runs_with_finite_varying_logits) {
    std::vector<float> ref;
    for (const char* type : {"f32", "q8_0"}) {
        SCOPED_TRACE(type);
        auto m = model::load(path(type), make_backend("cpu"));
        const auto prompt = m->tokenizer().encode("Once upon a time, there was a little dog", true);
        sampling_params sp;
        sp.temperature = 0;
        session s(*m, sp, 128);
        std::vector<float> logits;
        s.feed(prompt, &logits);
        const size_t nv = size_t(m->hparams().n_vocab);
        ASSERT_EQ(logits.size(), prompt.size() * nv);
        double sum2 = 0;
        for (size_t p = 0; p < prompt.size(); ++p) {
            const float* row = logits.data() + p * nv;
            float lo = row[0], hi = row[0];
            for (size_t i = 0; i < nv; ++i) {
                ASSERT_TRUE(std::isfinite(row[i])) << "position " << p << " token " << i;
                lo = std::min(lo, row[i]);
                hi = std::max(hi, row[i]);
                sum2 += double(row[i]) * row[i];
            }
            EXPECT_GT(hi - lo, 1.f) << "position " << p;
            if (p > 0) {
                EXPECT_FALSE(std::equal(row, row + nv, row - nv)) << "position " << p;
            }
        }
        const double rms = std::sqrt(sum2 / double(logits.size()));
        EXPECT_GT(rms, 0.1);  // with output std 1/sqrt(dim) over a unit-rms state, logits have an rms near 1
        EXPECT_LT(rms, 10.0);
        if (ref.empty()) {
            ref = logits;
        } else {  // q8_0 vs f32: the same model up to 8-bit rounding of the weights
            double d2 = 0;
            for (size_t i = 0; i < ref.size(); ++i) d2 += double(ref[i] - logits[i]) * (ref[i] - logits[i]);
            EXPECT_LT(std::sqrt(d2 / double(ref.size())), 0.05 * rms);
        }
        for (int i = 0; i < 16; ++i) EXPECT_TRUE(m->tokenizer().is_valid(s.step()));
        EXPECT_EQ(s.length(), prompt.size() + 16);
    }
}

// A deep, narrow model in f16: 32 layers of residual additions leave every logit finite (the final norm keeps
// their scale near 1 whatever the residual stream's).
TEST_F(synth, activations_stay_in_range_through_many_layers) {
    synth_shape o = tiny_overrides();
    o.n_layer = 32;
    const std::string p = path("deep");
    synth_model(synth_resolve_shape("", o), dtype::f16, 7, p);
    auto m = model::load(p, make_backend("cpu"));
    sampling_params sp;
    session s(*m, sp, 64);
    std::vector<float> logits;
    s.feed(m->tokenizer().encode("The sun was big and red.", true), &logits);
    double sum2 = 0;
    for (const float x : logits) {
        ASSERT_TRUE(std::isfinite(x));
        sum2 += double(x) * x;
    }
    const double rms = std::sqrt(sum2 / double(logits.size()));
    EXPECT_GT(rms, 0.1);
    EXPECT_LT(rms, 10.0);
}

TEST_F(synth, same_seed_gives_the_same_bytes_another_seed_does_not) {
    const synth_shape s = synth_resolve_shape("", tiny_overrides());
    synth_model(s, dtype::q8_0, 42, path("q8_0_again"));
    synth_model(s, dtype::q8_0, 43, path("q8_0_seed43"));
    const std::string a = test::read_file(path("q8_0")), b = test::read_file(path("q8_0_again"));
    const std::string c = test::read_file(path("q8_0_seed43"));
    EXPECT_TRUE(a == b) << "seed 42 twice gave different files";
    ASSERT_EQ(a.size(), c.size());
    // Beyond the seed key, the weights differ (norms are all ones whatever the seed).
    const gguf_file fa = gguf_file::open(path("q8_0")), fc = gguf_file::open(path("q8_0_seed43"));
    const gguf_tensor_info* ta = fa.find_tensor("blk.1.ffn_up.weight");
    const gguf_tensor_info* tc = fc.find_tensor("blk.1.ffn_up.weight");
    EXPECT_NE(std::memcmp(fa.tensor_data(*ta), fc.tensor_data(*tc), ta->nbytes), 0);
}

TEST(synth_shapes, named_shapes_resolve_and_fields_override) {
    const synth_shape s = synth_resolve_shape("110m", {});
    EXPECT_EQ(s.name, "110m");
    EXPECT_EQ(s.n_embd, 768);
    EXPECT_EQ(s.n_layer, 12);
    EXPECT_EQ(s.n_head, 12);
    EXPECT_EQ(s.n_head_kv, 12);
    EXPECT_EQ(s.n_ff, 2048);
    EXPECT_EQ(s.n_vocab, 32000);
    const synth_shape t = synth_resolve_shape("tinyllama-1.1b", {});
    EXPECT_EQ(t.n_embd, 2048);
    EXPECT_EQ(t.n_layer, 22);
    EXPECT_EQ(t.n_head, 32);
    EXPECT_EQ(t.n_head_kv, 4);
    EXPECT_EQ(t.n_ff, 5632);
    const synth_shape f = synth_resolve_shape("15m", {});
    EXPECT_EQ(f.n_embd, 288);
    EXPECT_EQ(f.n_layer, 6);
    EXPECT_EQ(f.n_ff, 768);
    synth_shape o;
    o.n_layer = 2;
    const synth_shape two = synth_resolve_shape("110m", o);
    EXPECT_EQ(two.name, "");  // no longer the named shape
    EXPECT_EQ(two.n_layer, 2);
    EXPECT_EQ(two.n_embd, 768);
    o = {};
    o.n_head = 8;  // a multi-head shape stays multi-head; a grouped one keeps its kv heads
    EXPECT_EQ(synth_resolve_shape("110m", o).n_head_kv, 8);
    EXPECT_EQ(synth_resolve_shape("tinyllama-1.1b", o).n_head_kv, 4);
    o = {};
    o.n_layer = 12;  // equal to the shape's: still 110m
    EXPECT_EQ(synth_resolve_shape("110m", o).name, "110m");
    for (const auto& k : synth_shapes()) EXPECT_NE(synth_shapes_text().find(k.name + ": dim"), std::string::npos);
    EXPECT_EQ(std::string(tandem_synth_shapes()), synth_shapes_text());
}

TEST(synth_shapes, bad_arguments_are_refused_by_name) {
    EXPECT_NE(error_of([] {
                  synth_resolve_shape("7b", {});
              }).find("unknown shape '7b' (known shapes: 260k, 15m, 42m, 110m, tinyllama-1.1b)"),
              std::string::npos);
    synth_shape o = tiny_overrides();
    o.n_ff = 0;
    o.n_vocab = 0;
    EXPECT_NE(error_of([&] { synth_resolve_shape("", o); }).find("missing: ffn, vocab"), std::string::npos);
    auto refused = [](auto edit, const std::string& want) {
        synth_shape o = tiny_overrides();
        edit(o);
        const std::string msg = error_of([&] { synth_resolve_shape("", o); });
        EXPECT_NE(msg.find(want), std::string::npos) << msg;
    };
    refused([](synth_shape& o) { o.n_head = 3; }, "heads 3 does not divide dim 64");
    refused([](synth_shape& o) { o.n_head_kv = 3; }, "kv heads 3 does not divide heads 4");
    refused([](synth_shape& o) { o.n_embd = 36; }, "head size 9 (dim / heads) must be even");
    refused([](synth_shape& o) { o.n_vocab = 100; }, "vocab 100 is too small: at least 260");
    refused([](synth_shape& o) { o.n_layer = -1; }, "layers -1 is negative");
    refused([](synth_shape& o) { o.n_embd = 1 << 20; }, "dim 1048576 is out of range");
    const synth_shape s = synth_resolve_shape("", tiny_overrides());
    EXPECT_NE(error_of([&] { synth_model(s, dtype::q4_1, 1, "/nonexistent/x.gguf"); }).find("unsupported type q4_1"),
              std::string::npos);
    EXPECT_NE(error_of([&] { synth_model(s, dtype::f32, 1, "/nonexistent/dir/x.gguf"); }, TANDEM_ERR_IO)
                  .find("/nonexistent/dir/x.gguf"),
              std::string::npos);

    tandem_synth_params p{};
    p.shape = "15m";
    p.type = "q5_k";
    EXPECT_EQ(tandem_synth(&p, "/tmp/unused.gguf", nullptr, nullptr), TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(tandem_last_error()).find("unknown type 'q5_k' (f32, f16, q8_0, q4_0, q4_k, q6_k)"),
              std::string::npos)
        << tandem_last_error();
    p.type = nullptr;
    EXPECT_EQ(tandem_synth(&p, "/tmp/unused.gguf", nullptr, nullptr), TANDEM_ERR_INVALID_ARGUMENT);
    p.type = "f32";
    EXPECT_EQ(tandem_synth(&p, nullptr, nullptr, nullptr), TANDEM_ERR_INVALID_ARGUMENT);
    p.shape = "nope";
    EXPECT_EQ(tandem_synth(&p, "/tmp/unused.gguf", nullptr, nullptr), TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(tandem_last_error()).find("known shapes"), std::string::npos);
}

// The C API and the CLI: progress per tensor, a model that loads, help for every option, clear errors.
TEST_F(synth, c_api_and_cli) {
    tandem_synth_params p{};
    p.n_embd = 64;
    p.n_layer = 2;
    p.n_head = 4;
    p.n_ff = 128;
    p.n_vocab = 300;
    p.type = "q4_0";
    p.seed = 5;
    int64_t calls = 0, last_total = 0;
    auto cb = [](int64_t done, int64_t total, void* user) {
        auto* st = static_cast<std::pair<int64_t*, int64_t*>*>(user);
        ++*st->first;
        *st->second = total;
        EXPECT_LE(done, total);
    };
    std::pair<int64_t*, int64_t*> st{&calls, &last_total};
    const std::string out = path("capi_q4_0");
    ASSERT_EQ(tandem_synth(&p, out.c_str(), cb, &st), TANDEM_OK) << tandem_last_error();
    EXPECT_EQ(calls, 21);
    EXPECT_EQ(last_total, 21);
    tandem_model* m = nullptr;
    ASSERT_EQ(tandem_model_load(out.c_str(), nullptr, &m), TANDEM_OK) << tandem_last_error();
    tandem_model_desc d{};
    ASSERT_EQ(tandem_model_describe(m, &d), TANDEM_OK);
    EXPECT_EQ(d.n_head_kv, 4);       // defaults to the heads
    EXPECT_EQ(d.n_ctx_train, 2048);  // the custom default
    EXPECT_EQ(d.n_vocab, 300);
    tandem_model_free(m);

    const std::string cli_out = path("cli_q4_0");
    auto [code, text] = run_cli(
        "synth --dim 64 --layers 1 --heads 4 --kv-heads 2 --ffn 96 --vocab 512 --ctx 64 -t q4_0 "
        "--seed 3 -o " +
        cli_out);
    EXPECT_EQ(code, 0) << text;
    EXPECT_NE(text.find("12/12 tensors"), std::string::npos) << text;
    EXPECT_NE(text.find("wrote " + cli_out), std::string::npos) << text;
    EXPECT_EQ(gguf_file::open(cli_out).find_tensor("blk.0.attn_v.weight")->type, dtype::q4_0);

    std::tie(code, text) = run_cli("synth --help");
    EXPECT_EQ(code, 0) << text;
    for (const char* opt : {"--shape", "--dim", "--layers", "--heads", "--kv-heads", "--ffn", "--vocab", "--ctx",
                            "--type", "--output", "--seed", "tinyllama-1.1b: dim 2048"}) {
        EXPECT_NE(text.find(opt), std::string::npos) << opt;
    }
    std::tie(code, text) = run_cli("synth --shape 7b -t q8_0 -o " + path("never"));
    EXPECT_EQ(code, 1) << text;
    EXPECT_NE(text.find("unknown shape '7b' (known shapes: 260k, 15m, 42m, 110m, tinyllama-1.1b)"), std::string::npos)
        << text;
    std::tie(code, text) = run_cli("synth --dim 64 --layers 2 -t q8_0 -o " + path("never"));
    EXPECT_EQ(code, 1) << text;
    EXPECT_NE(text.find("missing: --heads, --ffn, --vocab"), std::string::npos) << text;
    std::tie(code, text) = run_cli("synth --shape 15m -t q5_k -o " + path("never"));
    EXPECT_NE(code, 0) << text;
    EXPECT_NE(text.find("q5_k"), std::string::npos) << text;
    EXPECT_FALSE(std::filesystem::exists(path("never")));
}

}  // namespace
}  // namespace tandem
