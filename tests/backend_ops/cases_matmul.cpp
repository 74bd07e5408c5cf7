// matmul cases: f32 and f16 weights over tile-boundary shapes (M = rows of x, K = inner, N = weight rows),
// including one activation row (decode GEMV), odd sizes around vector widths and a K past 4096.
#include <cmath>

#include "tests/backend_ops/cases.h"
#include "tests/backend_ops/harness.h"

namespace tandem::test {

namespace {

const int64_t ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33, 64};
const int64_t ks[] = {1, 5, 7, 8, 32, 33, 64, 172, 4097};
const int64_t ns[] = {1, 7, 64, 513};

}  // namespace

namespace {

void sweep(backend_ops& t, dtype wt) {
    for (int64_t k : ks) {
        for (int64_t n : ns) {
            const arg w = random_arg(t.random(), wt, {k, n, 1, 1});
            for (int64_t m : ms) t.check(matmul_case(t.random(), w, m));
        }
    }
}

}  // namespace

TEST_P(backend_ops, matmul_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::f32);
    sweep(*this, dtype::f32);
}

TEST_P(backend_ops, matmul_f16_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::f16);
    sweep(*this, dtype::f16);
}

// f32 weights with short rows against verification-batch row counts (the cpu backend's panel kernel takes k <= 256
// from two rows on): many row blocks split over the threads, partial panels, and k on both sides of that limit.
TEST_P(backend_ops, matmul_f32_f32_batches) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::f32);
    for (int64_t k : {64, 172, 256, 257}) {
        for (int64_t n : {32, 33, 172, 512}) {
            const arg w = random_arg(random(), dtype::f32, {k, n, 1, 1});
            for (int64_t m : {65, 130, 396}) check(matmul_case(random(), w, m));
        }
    }
}

// Weights handed over the way the model loader does it: wrap_host on memory the caller keeps alive.
TEST_P(backend_ops, matmul_f16_f32_wrap_host) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::f16);
    for (int64_t k : {33, 4097}) {
        const arg w = random_arg(random(), dtype::f16, {k, 64, 1, 1});
        for (int64_t m : {1, 9}) {
            op_case c = matmul_case(random(), w, m);
            c.desc += " wrap_host";
            c.wrap_inputs = true;
            check(c);
        }
    }
}

// The same products with thread counts other than the default (more threads than items, odd splits).
TEST_P(backend_ops, matmul_f16_f32_threads) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::f16);
    for (int threads : {1, 3, 5}) {
        dut().set_threads(threads);
        for (int64_t n : {7, 513}) {
            const arg w16 = random_arg(random(), dtype::f16, {172, n, 1, 1});
            const arg w32 = random_arg(random(), dtype::f32, {172, n, 1, 1});
            for (int64_t m : {1, 5, 64}) {
                check(matmul_case(random(), w16, m));
                if (supports(op::matmul, dtype::f32)) check(matmul_case(random(), w32, m));
            }
        }
    }
}

}  // namespace tandem::test
