// Shared helpers for the tests: paths of the bundled models, file reading, seeded random data.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <memory>

namespace tandem {
class model;
class backend;
}

namespace tandem::test {

// Runs the tandem CLI (TANDEM_CLI_PATH) with `args` through the shell; returns its exit code and stdout (+ stderr
// unless with_stderr is false).
std::pair<int, std::string> run_cli(const std::string& args, bool with_stderr = true);

// Absolute path of a file in the repository's models/ directory.
std::string model_path(const std::string& name);
std::string read_file(const std::string& path);
// Seed for random test data: TANDEM_TEST_SEED if set, else a fixed default. Printed by failing tests.
uint64_t test_seed();
// Greedy generation of n tokens from BOS on m; the decoded text, stopping at BOS/EOS like llama2.c's run.c.
std::string greedy_story(const model& m, int n);

// Sets (value != nullptr) or unsets an environment variable for the object's life, then restores it.
class scoped_env {
   public:
    scoped_env(const char* name, const char* value);
    scoped_env(const char* name, const std::string& value) : scoped_env(name, value.c_str()) {}
    ~scoped_env();
    scoped_env(const scoped_env&) = delete;
    scoped_env& operator=(const scoped_env&) = delete;

   private:
    const char* name_;
    std::string old_;
    bool had_ = false;
};

// make_backend(name), or nullptr with the reason when this machine has no usable device for it
// (TANDEM_ERR_BACKEND); other errors propagate.
std::unique_ptr<backend> try_backend(const std::string& name, std::string& why);

// Greedy decoding of n tokens from BOS: each step's token and the logits it was chosen from.
struct greedy_run {
    std::vector<int32_t> tokens;
    std::vector<std::vector<float>> logits;
};
greedy_run greedy_with_logits(const model& m, int n);
// GPU vs cpu_ref on the same quantized model: the same tokens, logits within logit_tol over the agreeing steps
// (they reach ~15; summation order moves them by ~1e-5, hence 1e-3 by default; 8-bit activations by ~0.3); a
// divergence is accepted only at a near-tie of want's two best logits (< logit_tol apart). Prints the
// agreement; `what` names the run in failures. Returns the largest logit difference over the agreeing steps.
double expect_greedy_agrees(const greedy_run& got, const greedy_run& want, const std::string& what,
                            double logit_tol = 1e-3);
// models/stories260K.gguf quantized to `type` (quantize_model, default per-tensor rules), written once per
// process into a temporary directory that is removed at exit.
std::string quantized_stories260k(const char* type);

}  // namespace tandem::test
