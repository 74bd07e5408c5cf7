// What `tandem-bench ops` compares each case with, measured in the same run: the BLAS libraries' f32 matrix
// products at the case's shape (OpenBLAS on the CPU, CLBlast on the OpenCL device the backend uses) and each GPU
// API device's own trivial read kernel (kernels/bench_read.cl, shaders/bench_read.comp), whose bandwidth is the
// limit a memory-bound kernel on that device can reach.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "backends/backend.h"
#include "bench/timing.h"

namespace tandem::bench {

struct baseline_result {
    std::optional<timing> t;  // empty when not measurable here
    std::string what;         // the routine or kernel measured, e.g. "cblas_sgemm", "bench_read_f32_texel4"
    std::string why_not;      // why t is empty
    double bytes = 0;         // read kernels: bytes one run reads
};

// out {N, M} = x {K, M} times w {K, N} transposed, all f32, on `threads` OpenBLAS threads: cblas_sgemv for one
// row (M = 1), else cblas_sgemm. The data is random (the time does not depend on it).
baseline_result openblas_matmul(int64_t m, int64_t n, int64_t k, int threads, const repeat_policy& p);

// The same product through CLBlast (Gemv for M = 1, else Gemm) on the queue of `b`, which must be the opencl
// backend (else why_not says so).
baseline_result clblast_matmul(backend& b, int64_t m, int64_t n, int64_t k, const repeat_policy& p);

// The device's fastest simple read kernel over `bytes` of f32 in a buffer of b (opencl: strided and chunked
// float4 sums; vulkan: storage-buffer and 4-wide texel-buffer sums, lavapipe's fast path). Other backends:
// why_not. The result's bytes is what one run reads.
baseline_result device_read(backend& b, size_t bytes, const repeat_policy& p);

}  // namespace tandem::bench
