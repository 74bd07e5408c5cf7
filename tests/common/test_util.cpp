// Shared helpers for the tests.
#include "tests/common/test_util.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>

#include "backends/backend.h"
#include "engine/error.h"
#include "engine/model.h"
#include "engine/quantize_model.h"
#include "engine/session.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace tandem::test {

std::string greedy_story(const model& m, int n) {
    sampling_params sp;
    sp.temperature = 0;
    session s(m, sp, 512);
    const int32_t bos[1] = {m.tokenizer().bos()};
    s.feed(bos);
    std::string text;
    int32_t prev = bos[0];
    for (int i = 0; i < n; ++i) {
        const int32_t t = s.step();
        if (t == m.tokenizer().bos() || t == m.tokenizer().eos()) break;
        text += m.tokenizer().token_to_piece(prev, t);
        prev = t;
    }
    return text;
}


scoped_env::scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
}

scoped_env::~scoped_env() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
}

std::unique_ptr<backend> try_backend(const std::string& name, std::string& why) {
    try {
        return make_backend(name);
    } catch (const error& e) {
        if (e.status() != TANDEM_ERR_BACKEND) throw;
        why = e.what();
        return nullptr;
    }
}

greedy_run greedy_with_logits(const model& m, int n) {
    sampling_params sp;
    sp.temperature = 0;
    session s(m, sp, 256);
    const int32_t bos[1] = {m.tokenizer().bos()};
    s.feed(bos);
    greedy_run r;
    for (int i = 0; i < n; ++i) {
        r.logits.emplace_back(s.last_logits().begin(), s.last_logits().end());
        r.tokens.push_back(s.step());
    }
    return r;
}

double expect_greedy_agrees(const greedy_run& got, const greedy_run& want, const std::string& what,
                            double logit_tol) {
    const size_t n = want.tokens.size();
    EXPECT_EQ(got.tokens.size(), n) << what;
    if (got.tokens.size() != n) return 0;
    size_t same = 0;
    while (same < n && got.tokens[same] == want.tokens[same]) ++same;
    double worst = 0;
    for (size_t i = 0; i < std::min(same + 1, n); ++i)
        for (size_t v = 0; v < want.logits[i].size(); ++v)
            worst = std::max(worst, double(std::abs(got.logits[i][v] - want.logits[i][v])));
    EXPECT_LE(worst, logit_tol) << what << ": logits over the first " << same + 1 << " steps";
    std::printf("[ info     ] %s: %zu/%zu greedy tokens equal to cpu_ref, max logit difference %.2e\n", what.c_str(),
                same, n, worst);
    if (same < n) {
        std::vector<float> l = want.logits[same];
        std::partial_sort(l.begin(), l.begin() + 2, l.end(), std::greater<float>());
        EXPECT_LT(l[0] - l[1], logit_tol) << what << ": diverged at step " << same << " without a near-tie";
    }
    return worst;
}

namespace {
struct temp_dir {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("tandem_test_models_" + std::to_string(::getpid()));
    temp_dir() { std::filesystem::create_directories(path); }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};
}  // namespace

std::string quantized_stories260k(const char* type) {
    static temp_dir dir;
    static std::map<std::string, std::string> made;
    auto& p = made[type];
    if (p.empty()) {
        const std::string out = (dir.path / ("stories260K_" + std::string(type) + ".gguf")).string();
        dtype t = dtype::f32;
        for (dtype c : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k})
            if (dtype_name(c) == type) t = c;
        if (t == dtype::f32) throw std::invalid_argument(std::string("quantized_stories260k: unsupported type ") + type);
        quantize_model(model_path("stories260K.gguf"), out, t, false);
        p = out;
    }
    return p;
}

std::string model_path(const std::string& name) { return std::string(TANDEM_MODELS_DIR) + "/" + name; }

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

uint64_t test_seed() {
    if (const char* s = std::getenv("TANDEM_TEST_SEED")) return std::strtoull(s, nullptr, 10);
    return 20261122;
}


#ifdef TANDEM_CLI_PATH
std::pair<int, std::string> run_cli(const std::string& args, bool with_stderr) {
    const std::string cmd = std::string(TANDEM_CLI_PATH) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    const int st = pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}
#endif

}  // namespace tandem::test
