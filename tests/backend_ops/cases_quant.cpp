// Quantized weights (Q8_0, Q4_0): matmul over tile-boundary shapes (M = 1, 2, 5, 8, 9, 17, 64, 300 activation
// rows; K whole blocks from one block to 4160, with and without a multiple of 256; N around tile widths) plus
// seeded random ragged shapes (K up to 5120, N up to 4099), and get_rows, each against cpu_ref, which
// dequantizes the weights and multiplies by the f32 activations.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <string>

#include "engine/quantize.h"
#include "tests/backend_ops/cases.h"
#include "tests/backend_ops/harness.h"

namespace tandem::test {

namespace {

// Row counts: the cpu backend's packed kernel takes up to 12 rows in one pass (tiles 1-12) and more in passes of
// at most 9 (17: 9 + 8; 64: 8 x 8; 300).
const int64_t ms[] = {1, 2, 5, 8, 9, 10, 12, 17, 64, 300};
const int64_t ks[] = {32, 96, 256, 4096, 4160};
const int64_t ns[] = {1, 7, 48, 250, 513};  // 48: whole groups of 16 rows (prepared layouts), 250 and 513 with a tail
// Multiply-adds per case above which the fixed sweep leaves a shape to the random set (cpu_ref is naive).
constexpr int64_t k_sweep_macs = 200'000'000;

// Backends that multiply the exactly dequantized weights with the f32 activations (the GPU kernels); the others
// may quantize the activations to Q8 blocks first: cpu, and opencl's Q4_0 GEMV on CPU-class devices
// (kernels/mul_mv_q4_0_g16.cl, prepared weights; the looser bound is used for its other Q4_0 cases too).
bool exact_activations(const std::string& backend, dtype wt) {
    return backend == "vulkan" || (backend == "opencl" && wt != dtype::q4_0);
}

op_case quant_matmul_case(rng& r, const arg& w, int64_t m, bool exact_x) {
    op_case c = matmul_case(r, w, m);
    const int64_t k = w.ne[0], n = w.ne[1];
    // NMSE is checked only with enough outputs: over a handful it just measures how close the reference values
    // happen to be to zero (one output of -2e-4 gave an NMSE of 7e-7 from an error of 2e-7).
    const double unchecked = std::numeric_limits<double>::infinity();
    if (exact_x) {
        // d * q is exact in f32, so only the summation order differs from cpu_ref. Its sequential f32 sum of K
        // products (|w|, |x| <= 1) has an error of std ~ 3e-8 * sqrt(sum of squared partial sums); for the
        // largest outputs of a big case (|y| ~ 5 sqrt(K) / 3, partial sums growing towards it) that is
        // ~ 3e-8 * K, so 5e-7 * K is ~16 sigma (observed worst: 7e-8 * K). A swapped nibble pair or a misread
        // scale moves outputs by ~ 0.1 * sqrt(K); scales off by one fp16 ulp in every block by ~ 2e-3 * sqrt(K / 32).
        // NMSE: ~ 4e-16 * K expected (observed worst 2e-12 at K = 5,000); a systematic decoding error is O(1).
        c.tol = {n * m >= 64 ? 1e-10 : unchecked, 5e-7 * double(k) + 1e-6};
        return c;
    }
    // A backend may quantize the activations to Q8 blocks (cpu does): each x element then moves by up to half a
    // step, |e| <= max|x_block| / 254 <= 1/254, uniformly spread, so e has variance <= (1/127)^2 / 12. With
    // weights of mean square <= 1/3 the error of a K-term dot product has sigma <= 1.3e-3 * sqrt(K): allow 10
    // sigma. A dropped, doubled or misdecoded block (~0.3 * sqrt(32) per block) is far above that.
    // NMSE: expected ~2e-5.
    c.tol = {n * m >= 64 ? 1e-3 : unchecked, 1.3e-2 * std::sqrt(double(k)) + 1e-5};
    return c;
}

void matmul_sweep(backend_ops& t, dtype wt) {
    const bool exact = exact_activations(t.GetParam(), wt);
    for (int64_t k : ks) {
        for (int64_t n : ns) {
            const arg w = quantized_arg(t.random(), wt, {k, n, 1, 1});
            for (int64_t m : ms)
                if (k * n * m <= k_sweep_macs) t.check(prepared(quant_matmul_case(t.random(), w, m, exact)));
        }
    }
    // Seeded random ragged shapes: K any whole number of blocks up to 5120, N odd and up to 4099 (past the
    // widest tiles and work-group grids), M from decode to prefill; a few fixed big ones first.
    struct shape {
        int64_t k, n, m;
    };
    std::vector<shape> shapes = {{4096, 4099, 1}, {4160, 4099, 2}, {4096, 4099, 17}, {64, 4099, 300}, {4096, 250, 300}};
    const int64_t rand_ns[] = {1, 7, 33, 250, 4099}, rand_ms[] = {1, 2, 5, 11, 13, 17, 64, 300};
    rng& r = t.random();
    while (shapes.size() < 17) {
        shape s{32 * r.integer(1, 160), r.integer(0, 2) == 0 ? 2 * r.integer(0, 2500) + 1 : rand_ns[r.integer(0, 4)],
                rand_ms[r.integer(0, int64_t(std::size(rand_ms)) - 1)]};
        if (s.k * s.n * s.m <= 3 * k_sweep_macs / 2) shapes.push_back(s);
    }
    // Prepared (backend::prepare_weight, as a model's weights are) and, for the first few, also as they are.
    for (size_t i = 0; i < shapes.size(); ++i) {
        const auto& s = shapes[i];
        const op_case c = quant_matmul_case(r, quantized_arg(r, wt, {s.k, s.n, 1, 1}), s.m, exact);
        t.check(prepared(c));
        if (i < 5) t.check(c);
    }
}

void get_rows_sweep(backend_ops& t, dtype wt) {
    for (int64_t k : {32, 96, 4096, 4160}) {
        for (int64_t n_rows : {1, 5, 300, 4099}) {
            for (int64_t m : {1, 4, 33}) {
                std::vector<int32_t> ids(static_cast<size_t>(m));
                for (auto& id : ids) id = int32_t(t.random().integer(0, n_rows - 1));
                op_case c;
                c.desc = "get_rows_" + std::string(dtype_name(wt)) + "_f32 table=" + shape_str({k, n_rows, 1, 1}) +
                         " M=" + std::to_string(m);
                c.args = {quantized_arg(t.random(), wt, {k, n_rows, 1, 1}), i32_arg({m, 1, 1, 1}, ids),
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
            const arg w = quantized_arg(random(), wt, {160, 513, 1, 1});
            for (int64_t m : {1, 5, 64}) {
                const op_case c = quant_matmul_case(random(), w, m, exact_activations(GetParam(), wt));
                check(c);
                check(prepared(c));
            }
        }
    }
}

// A prepared layout must not outlive the bytes it was made from: the weight is prepared from other bytes, then
// overwritten by an upload, and the op must see the new weight (a stale layout gives the old one's products).
TEST_P(backend_ops, matmul_quant_prepare_then_upload) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::q4_0);
    for (dtype wt : {dtype::q4_0, dtype::q8_0}) {
        if (!supports(op::matmul, wt)) continue;
        for (int64_t m : {1, 3}) {
            const arg old_w = quantized_arg(random(), wt, {256, 40, 1, 1});
            op_case c = quant_matmul_case(random(), quantized_arg(random(), wt, {256, 40, 1, 1}), m,
                                          exact_activations(GetParam(), wt));
            c.desc += " prepared from other bytes, then uploaded";
            c.prepare = [old_w, new_w = c.args[0]](backend& b, const std::vector<tensor>& t) {
                b.upload(*t[0].buf, t[0].offset, old_w.bytes.data(), old_w.nbytes());
                b.prepare_weight(t[0]);
                b.upload(*t[0].buf, t[0].offset, new_w.bytes.data(), new_w.nbytes());
            };
            check(c);
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

// matmul_multi: several weights on one activation (a layer's Q/K/V or gate/up). Row counts off the 16-row groups,
// an odd block count, 1..7 activation rows; one type for all (the cpu backend's shared pass over packed layouts)
// and mixed types (one matmul after the other), prepared and not.
TEST_P(backend_ops, matmul_multi_quant_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::matmul, dtype::q4_0);
    const std::vector<std::vector<dtype>> type_sets = {
        {dtype::q4_0, dtype::q4_0, dtype::q4_0}, {dtype::q8_0, dtype::q8_0}, {dtype::q4_0, dtype::q8_0, dtype::f32}};
    for (const auto& types : type_sets) {
        bool ok = true;
        for (dtype t : types) ok = ok && supports(op::matmul, t);
        if (!ok) continue;
        for (int64_t k : {int64_t(96), int64_t(2048)}) {
            for (int64_t m : {int64_t(1), int64_t(2), int64_t(7)}) {
                const int64_t rows[] = {37, 16, 203};
                op_case c = quant_matmul_case(random(), quantized_arg(random(), types[0], {k, rows[0], 1, 1}), m,
                                              exact_activations(GetParam(), types[0]));
                c.desc = "matmul_multi " + std::to_string(types.size()) + " weights, first " + c.desc;
                const arg x = c.args[1];
                c.args = {};
                for (size_t i = 0; i < types.size(); ++i) {
                    c.args.push_back(types[i] == dtype::f32 ? random_arg(random(), dtype::f32, {k, rows[i], 1, 1})
                                                            : quantized_arg(random(), types[i], {k, rows[i], 1, 1}));
                }
                c.args.push_back(x);
                c.outputs = {};
                for (size_t i = 0; i < types.size(); ++i) {
                    c.outputs.push_back(int(c.args.size()));
                    c.args.push_back(output_arg(dtype::f32, {rows[i], m, 1, 1}));
                }
                const size_t nw = types.size();
                c.run = [nw](backend& b, const std::vector<tensor>& a) {
                    b.matmul_multi(std::span(a.data(), nw), a[nw], std::span(a.data() + nw + 1, nw));
                };
                check(c);
                c.desc += " prepared";
                c.prepare = [nw](backend& b, const std::vector<tensor>& a) {
                    for (size_t i = 0; i < nw; ++i) b.prepare_weight(a[i]);
                };
                check(c);
            }
        }
    }
}

}  // namespace tandem::test
