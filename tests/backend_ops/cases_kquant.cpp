// K-quant weights (Q4_K, Q6_K; 256-weight super-blocks): matmul over ragged shapes (K whole super-blocks up to
// 4096, odd N, M = 1, 2, 7, 33, 300 activation rows, shapes around the OpenCL tiles up to M = 512, plus seeded
// random K and N) and get_rows, each against cpu_ref, which dequantizes the weights and multiplies by the f32
// activations. Weights come from the quantizer (engine/quantize.h), either uniform values or values whose sub-blocks
// have very different scales and offsets, so every 6-bit scale and min (including the separately packed high bits of
// Q4_K's sub-blocks 4..7) is exercised.
#include <cmath>

#include "backends/cpu/dequant.h"
#include "engine/quantize.h"
#include "tests/backend_ops/cases.h"
#include "tests/backend_ops/harness.h"

namespace tandem::test {

namespace {

const int64_t ms[] = {1, 2, 7, 33, 300};
const int64_t ks[] = {256, 768, 4096};
const int64_t ns[] = {1, 7, 65, 513};

// Uniform [-1, 1] values, or with `spread` each 32-element sub-block scaled by 2^u (u uniform in [-5, 1]) and
// shifted by up to +-its scale: wide ranges of per-sub-block scales and of mins within one super-block.
arg kquant_arg(rng& r, dtype t, std::array<int64_t, 4> ne, bool spread) {
    auto values = random_floats(r, ne[0] * ne[1] * ne[2] * ne[3]);
    if (spread) {
        for (size_t i = 0; i < values.size(); i += 32) {
            const float scale = std::ldexp(1.f, int(r.integer(-5, 1))), shift = r.uniform(-1.f, 1.f) * scale;
            for (size_t j = i; j < i + 32 && j < values.size(); ++j) values[j] = values[j] * scale + shift;
        }
    }
    return quantized_arg(t, ne, values);
}

op_case kquant_matmul_case(rng& r, const arg& w, int64_t m) {
    op_case c = matmul_case(r, w, m);
    const int64_t k = w.ne[0], n = w.ne[1];
    // The cpu backend quantizes each activation row to int8 per 256 elements: an element moves by up to half a step,
    // |e| <= max|x| / 254 <= 1/254 (x uniform in [-1, 1]), uniformly spread, so variance <= (1/127)^2 / 12. The error
    // of a K-term dot product then has sigma <= 2.3e-3 * w_rms * sqrt(K), with w_rms the rms of the decoded weights:
    // allow 10 sigma. NMSE: expected ~1.6e-5, while a misdecoded layout moves every output by about its own size
    // (NMSE ~1); checked only with enough outputs (see cases_quant.cpp).
    std::vector<float> row(static_cast<size_t>(k));
    double ss = 0;
    for (int64_t j = 0; j < n; ++j) {
        dequantize_row(w.type, w.bytes.data() + size_t(j) * dtype_row_bytes(w.type, k), row.data(), k);
        for (float v : row) ss += double(v) * v;
    }
    const double w_rms = std::sqrt(ss / double(k * n));
    c.tol = {n * m >= 64 ? 1e-3 : 1.0, 10 * 2.3e-3 * w_rms * std::sqrt(double(k)) + 1e-5};
    return c;
}

void matmul_sweep(backend_ops& t, dtype wt) {
    for (bool spread : {false, true}) {
        for (int64_t k : ks) {
            for (int64_t n : ns) {
                const arg w = kquant_arg(t.random(), wt, {k, n, 1, 1}, spread);
                for (int64_t m : ms) {
                    if (m == 300 && k * n > 768 * 65) continue;  // cpu_ref's naive product: keep the sweep quick
                    t.check(kquant_matmul_case(t.random(), w, m));
                }
            }
        }
    }
    // Around the OpenCL kernels' tiles ({K, N, M}: GEMV passes of 4 rows, matrix-matrix from M = 8, tiles of 32 and
    // blocks of 2 x 4 outputs), up to a 512-row prefill.
    const std::array<int64_t, 3> edges[] = {{512, 33, 64}, {512, 65, 65}, {256, 31, 512},
                                            {4096, 3, 64}, {512, 9, 8},   {256, 2, 5}};
    for (const auto& [k, n, m] : edges) {
        const arg w = kquant_arg(t.random(), wt, {k, n, 1, 1}, true);
        t.check(kquant_matmul_case(t.random(), w, m));
    }
    // Seeded random ragged shapes: K any whole number of super-blocks up to 4096, N odd.
    for (int i = 0; i < 6; ++i) {
        const int64_t k = 256 * t.random().integer(1, 16), n = 2 * t.random().integer(0, 150) + 1;
        const arg w = kquant_arg(t.random(), wt, {k, n, 1, 1}, i % 2 == 1);
        for (int64_t m : {int64_t(1), t.random().integer(2, 40)}) t.check(kquant_matmul_case(t.random(), w, m));
    }
}

void get_rows_sweep(backend_ops& t, dtype wt) {
    for (int64_t k : {256, 768, 4096}) {
        for (int64_t n_rows : {1, 5, 301}) {
            for (int64_t m : {1, 4, 33}) {
                std::vector<int32_t> ids(static_cast<size_t>(m));
                for (auto& id : ids) id = int32_t(t.random().integer(0, n_rows - 1));
                op_case c;
                c.desc = "get_rows_" + std::string(dtype_name(wt)) + "_f32 table=" + shape_str({k, n_rows, 1, 1}) +
                         " M=" + std::to_string(m);
                c.args = {kquant_arg(t.random(), wt, {k, n_rows, 1, 1}, k == 768), i32_arg({m, 1, 1, 1}, ids),
                          output_arg(dtype::f32, {k, m, 1, 1})};
                c.outputs = {2};
                // The decode is a fixed f32 expression of fp16 scales and small integers: any backend evaluating
                // it as written (cpu uses the reference dequantization itself) is bit-exact.
                c.tol = {};
                c.run = [](backend& b, const std::vector<tensor>& a) { b.get_rows(a[0], a[1], a[2]); };
                t.check(c);
            }
        }
    }
}

}  // namespace

TEST_P(backend_ops, matmul_q4_k_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::q4_k);
    matmul_sweep(*this, dtype::q4_k);
}

TEST_P(backend_ops, matmul_q6_k_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::q6_k);
    matmul_sweep(*this, dtype::q6_k);
}

// Odd thread counts (more threads than weight rows, uneven splits) and weights handed over by wrap_host, the way the
// model loader does it.
TEST_P(backend_ops, matmul_kquant_f32_threads_wrap_host) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::q4_k);
    for (int threads : {1, 3, 5}) {
        dut().set_threads(threads);
        for (dtype wt : {dtype::q4_k, dtype::q6_k}) {
            if (!supports(op::matmul, wt)) continue;
            const arg w = kquant_arg(random(), wt, {512, 131, 1, 1}, true);
            for (int64_t m : {1, 5, 33}) {
                op_case c = kquant_matmul_case(random(), w, m);
                c.desc += " threads=" + std::to_string(threads) + " wrap_host";
                c.wrap_inputs = true;
                check(c);
            }
        }
    }
}

TEST_P(backend_ops, get_rows_q4_k_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::get_rows, dtype::q4_k);
    get_rows_sweep(*this, dtype::q4_k);
}

TEST_P(backend_ops, get_rows_q6_k_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::get_rows, dtype::q6_k);
    get_rows_sweep(*this, dtype::q6_k);
}

}  // namespace tandem::test
