// matmul launcher for quantized weights, read in their packed blocks (no dequantized copy ever exists): Q8_0 / Q4_0
// (kernels/mul_mv_quant.cl, mul_mm_quant.cl) and the K-quants Q4_K / Q6_K (kernels/mul_mv_kquant.cl,
// mul_mm_kquant.cl, decoding with kquant.cl). The same shape classes and device-class variants as f32/f16: few x
// rows (M < tune().gemm_min_rows) take the matrix-vector kernels ("row" on CPU devices, "wg" on GPUs); more rows
// take the matrix-matrix kernels ("dot" on CPU devices, "tiled" on GPUs, env TANDEM_OPENCL_MM). CLBlast has no
// quantized GEMM, so TANDEM_OPENCL_GEMM does not apply here.
// prepare_weight gives Q4_0 and Q8_0 weights on CPU devices a second copy for the GEMV, without half-precision
// scales: Q4_0 "g16" (16 rows side by side for 16-bit integer products with Q8-quantized activations,
// kernels/mul_mv_q4_0_g16.cl, ~1.1x the weight's bytes), Q8_0 "wide" (36-byte blocks with an f32 scale, ~1.06x,
// kernels/mul_mv_quant.cl). Both files say why and what they measured. get_rows, matmul_t and the GEMM kernels
// still read the original.
#include <memory>
#include <string>

#include "backends/opencl/log.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

namespace {

constexpr int k_mv_rows = 4;  // x rows per weight pass of the GEMV kernels (MV_ROWS), as for f32/f16

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

std::string mv_defines(int rows, const tuning& t) {
    return "-DMV_ROWS=" + std::to_string(rows) + " -DWGS=" + std::to_string(t.gemv_wgs) +
           (t.prefetch ? " -DTANDEM_PREFETCH" : "") + " -DTANDEM_X86_SIMD=" + std::to_string(t.x86_simd);
}

// A weight's prepared copy for the GEMV on CPU devices: Q4_0 in the g16 layout (runs = blocks per row in runs
// of 4, rounded up), Q8_0 in the wide layout (runs unused).
struct gemv_layout final : derived_layout {
    std::unique_ptr<buffer> mem;
    cl_int runs = 0;
};

constexpr size_t k_g16_run_bytes = 1280;  // G16_RUN_BYTES

}  // namespace

bool opencl_backend::prepare_weight(const tensor& w) {
    // The g16 / wide layouts only pay where the GEMV is one row per work-item (PoCL and other CPU devices).
    if (w.buf == nullptr || (w.type != dtype::q4_0 && w.type != dtype::q8_0) || tune_.gemv != gemv_variant::row)
        return false;
    const int64_t blocks = w.nelements() / 32, nb = w.ne[0] / 32, n = w.nrows();
    const bool q4 = w.type == dtype::q4_0;
    const int64_t runs = (nb + 3) / 4, groups = (n + 15) / 16;
    const size_t bytes = q4 ? size_t(groups * runs) * k_g16_run_bytes : size_t(blocks) * 36;
    if (blocks == 0 || (dev_.max_alloc > 0 && bytes > dev_.max_alloc)) return false;  // an optimisation only
    auto l = std::make_shared<gemv_layout>();
    l->mem = alloc(bytes);
    if (q4) {
        l->runs = dim(runs, "prepare_weight");
        cl_kernel kern = kernel("mul_mv_q4_0_g16.cl", "pack_q4_0_g16", mv_defines(1, tune_));
        set_args(kern, arg(w), arg(tensor{l->mem.get(), 0, dtype::q4_0, w.ne}), dim(nb, "prepare_weight"),
                 dim(n, "prepare_weight"), l->runs);
        const size_t global[2] = {size_t(runs), size_t(groups)}, local[2] = {0, 0};
        launch(kern, "pack_q4_0_g16", 2, global, local);
    } else {
        cl_kernel kern = kernel("mul_mv_quant.cl", "widen_q8_0", mv_defines(1, tune_));  // decode's build
        set_args(kern, arg(w), arg(tensor{l->mem.get(), 0, dtype::q8_0, w.ne}), cl_ulong(blocks));
        const size_t global[1] = {size_t(blocks)}, local[1] = {0};
        launch(kern, "widen_q8_0", 1, global, local);
    }
    w.buf->attach_layout(w, std::move(l));
    return false;  // the GEMM kernels (M >= gemm_min_rows), get_rows and matmul_t still read w's own bytes
}

// The g16 GEMV: x quantized to Q8 blocks into the scratch buffer, then the products (kernels/mul_mv_q4_0_g16.cl).
void opencl_backend::matmul_q4_0_g16(const tensor& w, cl_int runs, const tensor& x, const tensor& out, int rows) {
    const int64_t K = x.ne[0], M = x.nrows(), N = out.ne[0], nbp = 4 * int64_t(runs);
    const size_t q_bytes = size_t(M * nbp) * 32 * sizeof(int16_t), blk_bytes = size_t(M * nbp) * 4;
    const cl_ulong q_off = 0, d_off = q_bytes, sum_off = q_bytes + blk_bytes;
    cl_mem s = scratch(q_bytes + 2 * blk_bytes);
    const std::string defs = mv_defines(rows, tune_);
    cl_kernel quant = kernel("mul_mv_q4_0_g16.cl", "quantize_x_q8", defs);
    set_args(quant, arg(x), s, q_off, d_off, sum_off, dim(K, "matmul"), dim(M, "matmul"), dim(nbp, "matmul"));
    const size_t qglobal[2] = {size_t(nbp), size_t(M)}, qlocal[2] = {0, 0};
    launch(quant, "quantize_x_q8", 2, qglobal, qlocal);
    cl_kernel kern = kernel("mul_mv_q4_0_g16.cl", "mul_mv_q4_0_f32_g16", defs);
    set_args(kern, arg(w), s, q_off, d_off, sum_off, arg(out), dim(N, "matmul"), dim(M, "matmul"), runs);
    const size_t global[2] = {size_t((N + 15) / 16), size_t((M + rows - 1) / rows)};
    // A work-item streams 16 whole rows (K * 0.625 bytes), so small work-groups cost PoCL nothing per item and
    // give its threads many groups to balance (the automatic size put all 256 of a 4096-row weight in one group,
    // on one thread).
    const size_t local[2] = {4, 1};
    launch(kern, "mul_mv_q4_0_f32_g16", 2, global, local);
}

void opencl_backend::matmul_quant(const tensor& w, const tensor& x, const tensor& out) {
    const bool kquant = w.type == dtype::q4_k || w.type == dtype::q6_k;
    const std::string q(dtype_name(w.type));  // kernel names: mul_mv_<q>_f32_row, ...
    const char* mv_file = kquant ? "mul_mv_kquant.cl" : "mul_mv_quant.cl";
    const char* mm_file = kquant ? "mul_mm_kquant.cl" : "mul_mm_quant.cl";
    const int64_t K = w.ne[0], N = w.nrows(), M = x.nrows();
    if (M == 0 || N == 0) return;
    const cl_int k = dim(K, "matmul"), n = dim(N, "matmul"), m = dim(M, "matmul");

    if (M < tune_.gemm_min_rows) {
        const bool row = tune_.gemv == gemv_variant::row;
        const auto layout = row && (w.type == dtype::q4_0 || w.type == dtype::q8_0) ? w.buf->layout(w) : nullptr;
        const auto* prep = dynamic_cast<const gemv_layout*>(layout.get());
        const size_t wgs = tune_.gemv_wgs;
        const int rows = M == 1 ? 1 : k_mv_rows;  // one program each; a short last pass recomputes a row
        const size_t groups_m = size_t((M + rows - 1) / rows);
        if (prep != nullptr && w.type == dtype::q4_0) {
            matmul_q4_0_g16(tensor{prep->mem.get(), 0, w.type, w.ne}, prep->runs, x, out, rows);
            return;
        }
        const char* variant = prep ? "wide" : row ? "row" : "wg";
        const std::string name = "mul_mv_" + q + "_f32_" + variant;
        cl_kernel kern = kernel(mv_file, name.c_str(), mv_defines(rows, tune_));
        // The wide kernel takes (wide copy, 0) where the others take (w, w_off).
        const tensor wt = prep ? tensor{prep->mem.get(), 0, w.type, w.ne} : w;
        set_args(kern, arg(wt), arg(x), arg(out), k, n, m);
        const size_t global[2] = {row ? size_t(N) : size_t(N) * wgs, groups_m};
        const size_t local[2] = {wgs, 1};
        launch(kern, name.c_str(), 2, global, local);
        return;
    }
    if (tune_.mm == mm_variant::dot) {
        const std::string name = "mul_mm_" + q + "_f32_dot";
        log().debug("matmul {}x{}x{} {}: tandem {}", M, N, K, q, name);
        cl_kernel kern = kernel(mm_file, name.c_str(), tune_.mm_defines);
        set_args(kern, arg(w), arg(x), arg(out), k, n, m);
        const size_t global[2] = {(size_t(N) + tune_.mmd_block[0] - 1) / tune_.mmd_block[0],
                                  (size_t(M) + tune_.mmd_block[1] - 1) / tune_.mmd_block[1]};
        const size_t local[2] = {0, 0};
        launch(kern, name.c_str(), 2, global, local);
        return;
    }
    const std::string name = "mul_mm_" + q + "_f32_tiled";
    log().debug("matmul {}x{}x{} {}: tandem {}", M, N, K, q, name);
    cl_kernel kern = kernel(mm_file, name.c_str(), tune_.mm_defines);
    set_args(kern, arg(w), arg(x), arg(out), k, n, m);
    const size_t global[2] = {round_up(size_t(N), tune_.mm_tile[0]) / tune_.mm_tile[0] * tune_.mm_local[0],
                              round_up(size_t(M), tune_.mm_tile[1]) / tune_.mm_tile[1] * tune_.mm_local[1]};
    launch(kern, name.c_str(), 2, global, tune_.mm_local);
}

}  // namespace tandem::opencl
