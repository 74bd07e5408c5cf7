// The gtest-free core of the backend_ops harness, shared by test_backend_ops and `tandem-bench ops`: an op case
// (its arguments, outputs, tolerance and the call that runs it), the runner that executes a case on cpu_ref and on
// a backend under test and compares them, a staged case for timing, and seeded random data.
#pragma once

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
    // Optional, called once after the arguments are placed and before run (untimed): e.g. prepare_weight.
    std::function<void(backend&, const std::vector<tensor>&)> prepare;
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
// Runs c on b (op, synchronize) and returns every argument's whole buffer after it (guards included); throws
// what the backend threw.
std::vector<std::vector<uint8_t>> execute(backend& b, const op_case& c);
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

// A case placed in one backend's buffers (each argument in its own buffer with the guards above), for timing:
// run() enqueues the op once and waits. In-place ops keep changing their output from run to run.
class staged_case {
 public:
    staged_case(backend& b, const op_case& c);
    staged_case(const staged_case&) = delete;
    staged_case& operator=(const staged_case&) = delete;
    void run();
    const std::vector<tensor>& tensors() const { return tensors_; }

 private:
    backend& b_;
    const op_case& c_;
    std::vector<std::vector<uint8_t>> images_;  // host copies; back the buffers made by wrap_host
    std::vector<std::unique_ptr<buffer>> buffers_;
    std::vector<tensor> tensors_;
};

}  // namespace tandem::test
