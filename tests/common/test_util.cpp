// Shared helpers for the tests.
#include "tests/common/test_util.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace tandem::test {

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
