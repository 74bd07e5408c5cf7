// Shared helpers for the tests: paths of the bundled models, file reading, seeded random data.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace tandem {
class model;
}

namespace tandem::test {

// Absolute path of a file in the repository's models/ directory.
std::string model_path(const std::string& name);
std::string read_file(const std::string& path);
// Seed for random test data: TANDEM_TEST_SEED if set, else a fixed default. Printed by failing tests.
uint64_t test_seed();
// Greedy generation of n tokens from BOS on m; the decoded text, stopping at BOS/EOS like llama2.c's run.c.
std::string greedy_story(const model& m, int n);

}  // namespace tandem::test
