// matmul launcher for quantized weights, read in their packed blocks (no dequantized copy ever exists): Q8_0 / Q4_0
// (kernels/mul_mv_quant.cl, mul_mm_quant.cl) and the K-quants Q4_K / Q6_K (kernels/mul_mv_kquant.cl,
// mul_mm_kquant.cl, decoding with kquant.cl). The same shape classes and device-class variants as f32/f16: few x
// rows (M < tune().gemm_min_rows) take the matrix-vector kernels ("row" on CPU devices, "wg" on GPUs); more rows
// take the matrix-matrix kernels ("dot" on CPU devices, "tiled" on GPUs, env TANDEM_OPENCL_MM). CLBlast has no
// quantized GEMM, so TANDEM_OPENCL_GEMM does not apply here.
// prepare_weight gives Q4_0 and Q8_0 weights on CPU devices a second copy for the GEMV, without half-precision
// scales (kernels/mul_mv_quant.cl says why and what it measured): Q4_0 "split" (quants in interleaved runs of 4
// blocks, then f32 scales, ~1.1x the weight's bytes), Q8_0 "wide" (36-byte blocks with an f32 scale, ~1.06x).
// get_rows, matmul_t and the GEMM kernels still read the original.
#include <memory>
#include <string>

#include "backends/opencl/log.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

namespace {

constexpr int k_mv_rows = 4;  // x rows per weight pass of the GEMV kernels (MV_ROWS), as for f32/f16

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

std::string mv_defines(int rows, size_t wgs) {
    return "-DMV_ROWS=" + std::to_string(rows) + " -DWGS=" + std::to_string(wgs);
}

// A weight's split copy (kernels/mul_mv_quant.cl, split_q4_0): the quants of all its blocks from byte 0 of mem,
// one f32 scale per block from scales_offset.
struct split_layout final : derived_layout {
    std::unique_ptr<buffer> mem;
    cl_ulong scales_offset = 0;
};

}  // namespace

bool opencl_backend::prepare_weight(const tensor& w) {
    // The split / wide layouts only pay where the GEMV is one row per work-item (PoCL and other CPU devices).
    if (w.buf == nullptr || (w.type != dtype::q4_0 && w.type != dtype::q8_0) || tune_.gemv != gemv_variant::row)
        return false;
    const int64_t blocks = w.nelements() / 32;
    const bool q4 = w.type == dtype::q4_0;
    const size_t scales_offset = q4 ? size_t(blocks) * 16 : 0;
    const size_t bytes = q4 ? scales_offset + size_t(blocks) * 4 : size_t(blocks) * 36;
    if (blocks == 0 || (dev_.max_alloc > 0 && bytes > dev_.max_alloc)) return false;  // an optimisation only
    auto l = std::make_shared<split_layout>();
    l->mem = alloc(bytes);
    l->scales_offset = cl_ulong(scales_offset);
    const char* name = q4 ? "split_q4_0" : "widen_q8_0";
    cl_kernel kern = kernel("mul_mv_quant.cl", name, mv_defines(1, tune_.gemv_wgs));  // decode's build
    if (q4) {
        set_args(kern, arg(w), arg(tensor{l->mem.get(), scales_offset, dtype::q4_0, w.ne}), cl_ulong(blocks),
                 dim(w.ne[0] / 32, "prepare_weight"));
    } else {
        set_args(kern, arg(w), arg(tensor{l->mem.get(), 0, dtype::q8_0, w.ne}), cl_ulong(blocks));
    }
    const size_t global[1] = {size_t(blocks)}, local[1] = {0};
    launch(kern, name, 1, global, local);
    w.buf->attach_layout(w, std::move(l));
    return false;  // the GEMM kernels (M >= gemm_min_rows), get_rows and matmul_t still read w's own bytes
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
        const auto* split = dynamic_cast<const split_layout*>(layout.get());
        const char* variant = split ? (w.type == dtype::q4_0 ? "split" : "wide") : row ? "row" : "wg";
        const std::string name = "mul_mv_" + q + "_f32_" + variant;
        const size_t wgs = tune_.gemv_wgs;
        const int rows = M == 1 ? 1 : k_mv_rows;  // one program each; a short last pass recomputes a row
        cl_kernel kern = kernel(mv_file, name.c_str(), mv_defines(rows, wgs));
        // The split kernels take (split copy, offset of its scales) where the others take (w, w_off); the wide
        // kernel takes (wide copy, 0).
        const tensor wt = split ? tensor{split->mem.get(), size_t(split->scales_offset), w.type, w.ne} : w;
        set_args(kern, arg(wt), arg(x), arg(out), k, n, m);
        const size_t groups_m = size_t((M + rows - 1) / rows);
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
