// The backend_ops harness's GoogleTest fixtures: each check runs one op case (op_case.h) on cpu_ref (the oracle)
// and on the backend under test and records a failure with the seed. Cases are built from a seeded RNG
// (tandem::test::test_seed()); failures print the case and seed. The case machinery itself is gtest-free
// (op_case.h, cases.h, the tandem_op_cases library) so that `tandem-bench ops` times the same cases.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/backend_ops/op_case.h"

namespace tandem::test {

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
