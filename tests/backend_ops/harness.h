// The backend_ops harness: runs one op case on cpu_ref (the oracle) and on a backend under test, each with
// tensors in its own buffers (alloc / upload / download only, never the tested backend's host pointers),
// checks the guard bytes around every tensor, and compares the outputs with per-op NMSE and max-error
// thresholds. Cases are built from a seeded RNG (tandem::test::test_seed()); failures print the case and seed.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace tandem::test {

// One tensor argument of an op: its type, shape and initial contents (nbytes() bytes).
struct arg {
    dtype type = dtype::f32;
    std::array<int64_t, 4> ne{1, 1, 1, 1};
    std::vector<uint8_t> bytes;
    size_t nbytes() const;
};

// Acceptance of one output. nmse = sum((got - ref)^2) / sum(ref^2); max_abs = max |got - ref|.
// Both zero means bit-exact. i32 outputs are always compared exactly.
struct tolerance {
    double nmse = 0;
    double max_abs = 0;
};

struct op_case {
    std::string desc;  // variant name and shape, e.g. "matmul_f16_f32 M=3 K=33 N=7"
    std::vector<arg> args;
    std::vector<int> outputs;  // indices into args compared after the op (in-place ops name their input)
    tolerance tol;
    std::function<void(backend&, const std::vector<tensor>&)> run;
    bool wrap_inputs = false;  // pass the non-output arguments through backend::wrap_host (model weights)
};

// Bytes of guard around each tensor. The front guard also makes every tensor start at a non-zero offset
// in its buffer, so a backend that ignores tensor::offset fails.
constexpr size_t front_guard = 256;
constexpr size_t back_guard = 64;

// Called on each downloaded output buffer of the tested backend before the comparison (self-test only):
// `buf` is the whole buffer (front guard, data at offset front_guard, back guard).
using perturb_fn = std::function<void(int arg_index, std::vector<uint8_t>& buf)>;

// Largest observed deviation of a passing comparison, for tuning tolerances.
struct deviation {
    double nmse = 0, max_abs = 0;
};

// Runs c on ref and on dut and compares; returns "" when they agree, else what differs.
std::string run_case(backend& ref, backend& dut, const op_case& c, const perturb_fn& perturb = {},
                     deviation* dev = nullptr);
// Runs c on b (op, synchronize, download) and returns "" if that threw tandem::error, else a complaint.
std::string expect_error(backend& b, const op_case& c);

// ---- seeded random data ----
class rng {
   public:
    explicit rng(uint64_t seed) : gen_(seed) {}
    float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen_); }
    int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen_); }
    std::mt19937_64& engine() { return gen_; }

   private:
    std::mt19937_64 gen_;
};

std::vector<float> random_floats(rng& r, int64_t n, float lo = -1.f, float hi = 1.f);
// A tensor of type f32 or f16 holding `values` (converted to f16 with round-to-nearest-even).
arg float_arg(dtype t, std::array<int64_t, 4> ne, const std::vector<float>& values);
arg random_arg(rng& r, dtype t, std::array<int64_t, 4> ne, float lo = -1.f, float hi = 1.f);
arg i32_arg(std::array<int64_t, 4> ne, const std::vector<int32_t>& values);
// An output the op must overwrite: every byte 0xff (NaN for f32/f16, -1 for i32), so a skipped element fails.
arg output_arg(dtype t, std::array<int64_t, 4> ne);
std::string shape_str(const std::array<int64_t, 4>& ne);

// ---- the fixtures ----
// Backends tested against cpu_ref: every compiled-in backend except cpu_ref itself.
std::vector<std::string> tested_backends();

// Parameterised by the backend under test. check() runs a case and records a failure (the first few in
// full) with the seed; SetUp prints nothing, TearDown summarises.
class backend_ops : public ::testing::TestWithParam<std::string> {
   public:
    void SetUp() override;
    void TearDown() override;
    backend& ref() { return *ref_; }
    backend& dut() { return *dut_; }
    // False (and the test should GTEST_SKIP) when the tested backend does not support (o, t).
    bool supports(op o, dtype t) { return dut_->supports(o, t); }
    void check(const op_case& c);
    rng& random() { return rng_; }

   private:
    std::unique_ptr<backend> ref_, dut_;
    rng rng_{0};
    int cases_ = 0, failures_ = 0;
    deviation worst_;
};

// Parameterised by every backend, cpu_ref included: bad arguments must throw.
class backend_errors : public ::testing::TestWithParam<std::string> {
   public:
    void SetUp() override;
    backend& dut() { return *dut_; }
    void check_throws(const op_case& c);
    // Bad attention layouts: host backends throw, device kernels skip bad slots and bound walks
    // (backends/backend.h), so on a device backend the op only has to complete.
    void check_attention_rejects(const op_case& c);

   private:
    std::unique_ptr<backend> dut_;
};

}  // namespace tandem::test

#define TANDEM_SKIP_UNSUPPORTED(o, t)                                                   \
    do {                                                                                \
        if (!supports(o, t)) GTEST_SKIP() << GetParam() << " does not support this op"; \
    } while (0)
