// Shared helpers for the tests.
#include "tests/common/test_util.h"

#include "engine/model.h"
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

}  // namespace tandem::test
