// Quantized weights (Q8_0, Q4_0): matmul over tile-boundary shapes (M = 1..9, 16, 64 activation rows; K whole
// blocks from one block to 4096; N around the tile widths) and get_rows, each against cpu_ref, which
// dequantizes the weights and multiplies by the f32 activations.
#include <cmath>

#include "engine/quantize.h"
#include "tests/backend_ops/cases.h"

namespace tandem::test {

namespace {

const int64_t ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 64};
const int64_t ks[] = {32, 64, 96, 4096};
const int64_t ns[] = {1, 7, 64, 513};

// Uniform [-1, 1] values quantized to t (the harness's random_arg only knows plain floats).
arg quant_arg(rng& r, dtype t, std::array<int64_t, 4> ne) {
    const auto values = random_floats(r, ne[0] * ne[1] * ne[2] * ne[3]);
    arg a;
    a.type = t;
    a.ne = ne;
    a.bytes.resize(dtype_row_bytes(t, ne[0]) * size_t(ne[1] * ne[2] * ne[3]));
    const size_t rb = dtype_row_bytes(t, ne[0]);
    for (int64_t row = 0; row < ne[1] * ne[2] * ne[3]; ++row) {
        quantize_row(t, values.data() + row * ne[0], a.bytes.data() + size_t(row) * rb, ne[0]);
    }
    return a;
}

op_case quant_matmul_case(rng& r, const arg& w, int64_t m) {
    op_case c = matmul_case(r, w, m);
    const int64_t k = w.ne[0], n = w.ne[1];
    // A backend may quantize the activations to Q8 blocks (cpu does): each x element then moves by up to half a
    // step, |e| <= max|x_block| / 254 <= 1/254, uniformly spread, so e has variance <= (1/127)^2 / 12. With
    // weights of mean square <= 1/3 the error of a K-term dot product has sigma <= 1.3e-3 * sqrt(K): allow 10
    // sigma. A dropped, doubled or misdecoded block (~0.3 * sqrt(32) per block) is far above that.
    // NMSE: expected ~2e-5; checked only with enough outputs, since with a handful it just measures how close
    // the reference value happens to be to zero.
    c.tol = {n * m >= 64 ? 1e-3 : 1.0, 1.3e-2 * std::sqrt(double(k)) + 1e-5};
    return c;
}

void matmul_sweep(backend_ops& t, dtype wt) {
    for (int64_t k : ks) {
        for (int64_t n : ns) {
            const arg w = quant_arg(t.random(), wt, {k, n, 1, 1});
            for (int64_t m : ms) t.check(quant_matmul_case(t.random(), w, m));
        }
    }
}

void get_rows_sweep(backend_ops& t, dtype wt) {
    for (int64_t k : {32, 96, 4096}) {
        for (int64_t n_rows : {1, 5, 300}) {
            for (int64_t m : {1, 4, 33}) {
                std::vector<int32_t> ids(static_cast<size_t>(m));
                for (auto& id : ids) id = int32_t(t.random().integer(0, n_rows - 1));
                op_case c;
                c.desc = "get_rows_" + std::string(dtype_name(wt)) + "_f32 table=" + shape_str({k, n_rows, 1, 1}) +
                         " M=" + std::to_string(m);
                c.args = {quant_arg(t.random(), wt, {k, n_rows, 1, 1}), i32_arg({m, 1, 1, 1}, ids),
                          output_arg(dtype::f32, {k, m, 1, 1})};
                c.outputs = {2};
                c.tol = {};  // d * q in f32 is one exact product of an fp16 and a small integer: bit-exact
                c.run = [](backend& b, const std::vector<tensor>& a) { b.get_rows(a[0], a[1], a[2]); };
                t.check(c);
            }
        }
    }
}

}  // namespace

TEST_P(backend_ops, matmul_q8_0_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::q8_0);
    matmul_sweep(*this, dtype::q8_0);
}

TEST_P(backend_ops, matmul_q4_0_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::q4_0);
    matmul_sweep(*this, dtype::q4_0);
}

// Odd thread counts (more threads than weight rows, uneven splits) on the quantized path.
TEST_P(backend_ops, matmul_q4_0_f32_threads) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::q4_0);
    for (int threads : {1, 3, 5}) {
        dut().set_threads(threads);
        for (dtype wt : {dtype::q4_0, dtype::q8_0}) {
            if (!supports(op::matmul, wt)) continue;
            const arg w = quant_arg(random(), wt, {160, 513, 1, 1});
            for (int64_t m : {1, 5, 64}) check(quant_matmul_case(random(), w, m));
        }
    }
}

TEST_P(backend_ops, get_rows_q8_0_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::get_rows, dtype::q8_0);
    get_rows_sweep(*this, dtype::q8_0);
}

TEST_P(backend_ops, get_rows_q4_0_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::get_rows, dtype::q4_0);
    get_rows_sweep(*this, dtype::q4_0);
}

}  // namespace tandem::test
