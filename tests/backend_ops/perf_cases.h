// The perf case list of `tandem-bench ops`: op cases at the shapes of a 7B llama-family model (4096 hidden,
// 11008 FFN, 32 heads of 128, 32000 vocabulary), each with the work it does, so that a timing becomes GB/s or
// GFLOP/s. The cases are built by the same builders as the correctness tests (cases.h) and can be checked against
// cpu_ref with run_case (op_case.h) before they are timed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tests/backend_ops/op_case.h"

namespace tandem::test {

// What a case is compared with: memory-bound cases with the device's read bandwidth (GB/s / limit), compute-bound
// ones (GEMM) with a BLAS SGEMM of the same shape timed in the same run (GFLOP/s / baseline).
enum class perf_bound { memory, compute };

struct perf_case {
    std::string name;  // variant name and shape, e.g. "matmul_q4_0_f32 M=1 K=4096 N=4096"
    op o = op::matmul;
    dtype t = dtype::f32;  // the type backend::supports(o, t) is asked about
    double flops = 0;      // floating-point operations per run (multiply and add count 1 each); 0: not reported
    double bytes = 0;      // bytes one run must move at least (see perf_cases.cpp for each op's count)
    perf_bound bound = perf_bound::memory;
    int64_t m = 0, n = 0, k = 0;     // matmul only: x rows, weight rows, inner size (the baselines' shape)
    std::function<op_case()> build;  // the case with its data (large: built when it is about to run)
};

// The full list, or with smoke the same ops at tiny shapes (for ctest). Data comes from rng(seed); the matmul
// cases of one weight share its data (built once, in list order).
std::vector<perf_case> perf_cases(bool smoke, uint64_t seed);

}  // namespace tandem::test
