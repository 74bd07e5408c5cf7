// The OpenAI-compatible HTTP API driven by real clients: curl (streaming and not) and, when Python and the
// official `openai` package are available, that package. Behind it: an edge (spec mode) talking to a
// verification server on loopback, so responses are the target's greedy output.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "collab/http_api.h"
#include "collab/http_generators.h"
#include "collab/server.h"
#include "engine/session.h"
#include "tests/common/test_util.h"

namespace tandem::collab {
namespace {

using json = nlohmann::json;

const model& target_model() {
    static auto m = model::load(test::model_path("stories260K.gguf"), make_backend("cpu"));
    return *m;
}
const model& draft_model() {
    static auto m = model::load(test::model_path("llama2xs_tinystories_279K.gguf"), make_backend("cpu"));
    return *m;
}

// Runs a shell command, returns its stdout and sets *rc to its exit status.
std::string run(const std::string& cmd, int* rc = nullptr) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int st = pclose(p);
    if (rc) *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

bool have(const char* tool) { return std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0; }

class http_loopback : public ::testing::Test {
   protected:
    void SetUp() override {
        server_config sc;
        sc.address = "127.0.0.1:0";
        sc.tokens = {"cloud-secret"};
        sc.seq_capacity = 512;
        sc.kv_regions = 8;
        sc.stats_interval = std::chrono::seconds(0);
        sc.model_id = "stories260K";
        server_ = std::make_unique<collab_server>(target_model(), sc);
        server_->start();
        edge_config ec;
        ec.link.address = "127.0.0.1:" + std::to_string(server_->port());
        ec.link.token = "cloud-secret";
        ec.ctx = 512;
        gen_ = std::make_unique<edge_generator>(draft_model(), ec, "tandem-test");
        http_config hc;
        hc.address = "127.0.0.1:0";
        hc.api_keys = {"key-1"};
        hc.max_tokens_limit = 256;
        api_ = std::make_unique<http_api>(*gen_, hc);
        api_->start();
        base_ = "http://127.0.0.1:" + std::to_string(api_->port());
    }
    void TearDown() override {
        api_.reset();
        server_.reset();
    }
    // curl with the key; -w appends the HTTP status on its own line.
    std::string curl(const std::string& path, const std::string& body, const std::string& key = "key-1") {
        std::string cmd = "curl -sN -w '\\n%{http_code}' ";
        if (!key.empty()) cmd += "-H 'Authorization: Bearer " + key + "' ";
        if (!body.empty()) cmd += "-H 'Content-Type: application/json' --data-binary @- ";
        cmd += base_ + path;
        if (!body.empty()) cmd = "printf '%s' '" + body + "' | " + cmd;
        return run(cmd);
    }
    static int status_of(const std::string& out) { return std::atoi(out.substr(out.rfind('\n') + 1).c_str()); }
    static std::string body_of(const std::string& out) { return out.substr(0, out.rfind('\n')); }

    std::string greedy_text(const std::string& prompt, int n) {
        sampling_params sp;
        sp.temperature = 0;
        session s(target_model(), sp, 512);
        const auto toks = target_model().tokenizer().encode(prompt, true);
        s.feed(toks);
        std::string text;
        int32_t prev = toks.back();
        for (int i = 0; i < n; ++i) {
            const int32_t t = s.step();
            if (t == target_model().tokenizer().eos() || t == target_model().tokenizer().bos()) break;
            text += target_model().tokenizer().token_to_piece(prev, t);
            prev = t;
        }
        return text;
    }

    std::unique_ptr<collab_server> server_;
    std::unique_ptr<edge_generator> gen_;
    std::unique_ptr<http_api> api_;
    std::string base_;
};

TEST_F(http_loopback, curl_completion_and_chat_streaming_with_tandem_statistics) {
    if (!have("curl")) GTEST_SKIP() << "curl is not installed (apt-get install curl)";
    const auto out = curl("/v1/completions", R"({"model":"tandem-test","prompt":"Once upon a time","max_tokens":32,"temperature":0})");
    ASSERT_EQ(status_of(out), 200) << out;
    const json j = json::parse(body_of(out));
    EXPECT_EQ(j["object"], "text_completion");
    EXPECT_EQ(j["choices"][0]["text"].get<std::string>(), greedy_text("Once upon a time", 32));
    EXPECT_EQ(j["usage"]["completion_tokens"], 32);
    EXPECT_EQ(j["tandem"]["mode"], "spec");
    EXPECT_GT(j["tandem"]["tokens_per_target_pass"].get<double>(), 1.0);
    EXPECT_EQ(j["tandem"]["unverified_tokens"], 0);

    const auto s = curl("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":16,"temperature":0,"stream":true})");
    ASSERT_EQ(status_of(s), 200) << s;
    std::string text, finish;
    int events = 0;
    bool done = false;
    for (size_t at = 0; (at = s.find("data: ", at)) != std::string::npos;) {
        const size_t end = s.find("\n\n", at);
        const std::string data = s.substr(at + 6, end - at - 6);
        at = end;
        if (data == "[DONE]") {
            done = true;
            break;
        }
        const json e = json::parse(data);
        EXPECT_EQ(e["object"], "chat.completion.chunk");
        ++events;
        if (e["choices"][0]["delta"].contains("content")) text += e["choices"][0]["delta"]["content"].get<std::string>();
        if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
    }
    EXPECT_TRUE(done);
    EXPECT_GT(events, 3);
    EXPECT_EQ(finish, "length");
    EXPECT_FALSE(text.empty());
    // The same request without streaming gives the same text.
    const auto ns = curl("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":16,"temperature":0})");
    EXPECT_EQ(json::parse(body_of(ns))["choices"][0]["message"]["content"].get<std::string>(), text);
}

TEST_F(http_loopback, stop_strings_models_health_and_metrics) {
    if (!have("curl")) GTEST_SKIP() << "curl is not installed (apt-get install curl)";
    const std::string full = greedy_text("Once upon a time", 40);
    const auto out = curl("/v1/completions", R"({"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stop":["park"]})");
    const json j = json::parse(body_of(out));
    EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(j["choices"][0]["text"].get<std::string>(), full.substr(0, full.find("park")));
    EXPECT_EQ(json::parse(body_of(curl("/v1/models", "")))["data"][0]["id"], "tandem-test");
    EXPECT_EQ(status_of(curl("/health", "", "")), 200);
    const auto m = curl("/metrics", "");
    EXPECT_NE(m.find("tandem_generated_tokens_total"), std::string::npos) << m;
}

TEST_F(http_loopback, bad_requests_get_openai_style_errors_and_the_server_stays_up) {
    if (!have("curl")) GTEST_SKIP() << "curl is not installed (apt-get install curl)";
    struct bad_case {
        const char* what;
        std::string path, body, key;
        int status;
    };
    const std::vector<bad_case> cases = {
        {"malformed JSON", "/v1/completions", "{\"prompt\": ", "key-1", 400},
        {"not an object", "/v1/completions", "[1,2]", "key-1", 400},
        {"unknown field", "/v1/completions", R"({"prompt":"a","frobnicate":true})", "key-1", 400},
        {"absurd max_tokens", "/v1/completions", R"({"prompt":"a","max_tokens":1000000000})", "key-1", 400},
        {"negative max_tokens", "/v1/completions", R"({"prompt":"a","max_tokens":-5})", "key-1", 400},
        {"temperature out of range", "/v1/completions", R"({"prompt":"a","temperature":7})", "key-1", 400},
        {"missing prompt", "/v1/completions", R"({"max_tokens":4})", "key-1", 400},
        {"bad messages", "/v1/chat/completions", R"({"messages":[{"role":"wizard","content":"x"}]})", "key-1", 400},
        {"n > 1", "/v1/completions", R"({"prompt":"a","n":3})", "key-1", 400},
        {"missing key", "/v1/completions", R"({"prompt":"a"})", "", 401},
        {"wrong key", "/v1/models", "", "key-2", 401},
        {"unknown endpoint", "/v1/embeddings", R"({"input":"a"})", "key-1", 404},
    };
    for (const auto& c : cases) {
        const auto out = curl(c.path, c.body, c.key);
        EXPECT_EQ(status_of(out), c.status) << c.what << ": " << out;
        json e;
        ASSERT_NO_THROW(e = json::parse(body_of(out))) << c.what << ": " << out;
        EXPECT_TRUE(e.contains("error") && e["error"]["message"].is_string() && e["error"].contains("type")) << c.what;
    }
    const auto ok = curl("/v1/completions", R"({"prompt":"Once","max_tokens":4})");
    EXPECT_EQ(status_of(ok), 200) << ok;
}

TEST_F(http_loopback, the_official_openai_python_package_works_against_it) {
    const char* py_env = std::getenv("TANDEM_PYTHON");
    const std::string py = py_env && *py_env ? py_env : "python3";
    if (!have(py.c_str())) GTEST_SKIP() << "no Python interpreter (" << py << ")";
    int rc = 0;
    const std::string script = std::string(TANDEM_SOURCE_DIR) + "/tests/http/openai_client.py";
    const std::string out = run(py + " " + script + " " + base_ + "/v1 key-1 2>&1", &rc);
    if (rc == 3) GTEST_SKIP() << out << "(tools/check.sh installs it into build/pyenv; TANDEM_PYTHON picks the interpreter)";
    ASSERT_EQ(rc, 0) << out;
    const json j = json::parse(out.substr(out.rfind("\n{") == std::string::npos ? 0 : out.rfind("\n{") + 1));
    EXPECT_EQ(j["models"][0], "tandem-test");
    EXPECT_EQ(j["completion"].get<std::string>(), greedy_text("Once upon a time", 24));
    EXPECT_EQ(j["completion_tokens"], 24);
    EXPECT_FALSE(j["chat_stream"].get<std::string>().empty());
    EXPECT_EQ(j["bad_max_tokens"], 400);
    EXPECT_EQ(j["bad_key"], 401);
}

TEST(chat_template, known_template_families_render_natively_and_others_get_the_plain_one) {
    const std::vector<std::pair<std::string, std::string>> msgs = {{"system", "Be brief."}, {"user", "Hi"}};
    EXPECT_EQ(apply_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}...", msgs),
              "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(apply_chat_template("...<|start_header_id|>...", msgs),
              "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
              "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_EQ(apply_chat_template("... [INST] ...", msgs), "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]");
    EXPECT_EQ(apply_chat_template("...<|user|>...", msgs), "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n");
    EXPECT_EQ(apply_chat_template("", msgs), "System: Be brief.\nUser: Hi\nAssistant:");
}

}  // namespace
}  // namespace tandem::collab
