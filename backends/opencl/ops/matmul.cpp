// matmul launchers. Few x rows (M < tune().gemm_min_rows): the matrix-vector kernels of kernels/mul_mv.cl,
// variant "row" or "wg" by device class. More rows: our kernel (kernels/mul_mm.cl: "dot" on CPU devices,
// "tiled" on GPUs) or CLBlast's GEMM on the same queue, chosen per shape by env TANDEM_OPENCL_GEMM or the
// measured table below. Q8_0 / Q4_0 / Q4_K / Q6_K weights go to ops/matmul_quant.cpp.
#include <clblast.h>

#include "backends/op_checks.h"
#include "backends/opencl/log.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

namespace {

constexpr int k_mv_rows = 4;  // x rows per weight pass of the mul_mv kernels (MV_ROWS)

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

// When TANDEM_OPENCL_GEMM=auto: the first rule that matches (device class, x rows, weight size) decides.
struct gemm_rule {
    bool cpu_device;
    int64_t min_rows, min_weights;  // M >= min_rows and K * N >= min_weights
    bool clblast;
};
const gemm_rule k_gemm_table[] = {
    // PoCL 3.1, 2-vCPU Zen 5, f32 (tests/test_opencl.cpp opencl_perf, same run, loaded machine): our "dot"
    // kernel 6.6 vs CLBlast 2.2 GFLOP/s at M=512, N=K=1024 and 5.2 vs 3.6 at M=512, N=K=4096.
    {true, 0, 0, false},
    // GPUs: not measured here. CLBlast ships tuned GEMMs for common GPUs, our tiled kernel is untuned: CLBlast
    // for big products, ours where CLBlast's fixed costs (padding copies, launches) dominate.
    {false, 64, int64_t(1) << 20, true},
    {false, 0, 0, false},
};

}  // namespace

bool opencl_backend::use_clblast(const tensor& w, int64_t m_rows) const {
    switch (tune_.gemm) {
        case gemm_variant::tandem:
            return false;
        case gemm_variant::clblast:
            return true;
        case gemm_variant::auto_select:
            break;
    }
    const int64_t weights = w.ne[0] * w.nrows();
    for (const auto& r : k_gemm_table)
        if (r.cpu_device == dev_.is_cpu() && m_rows >= r.min_rows && weights >= r.min_weights) return r.clblast;
    return false;
}

void opencl_backend::matmul(const tensor& w, const tensor& x, const tensor& out) {
    checks::matmul(w, x, out);
    if (w.type == dtype::q8_0 || w.type == dtype::q4_0 || w.type == dtype::q4_k || w.type == dtype::q6_k)
        return matmul_quant(w, x, out);
    if (w.type != dtype::f32 && w.type != dtype::f16)
        throw error(TANDEM_ERR_UNSUPPORTED, "opencl: matmul with " + std::string(dtype_name(w.type)) + " weights");
    const bool f16 = w.type == dtype::f16;
    const int64_t K = w.ne[0], N = w.nrows(), M = x.nrows();
    if (M == 0 || N == 0) return;
    const cl_int k = dim(K, "matmul"), n = dim(N, "matmul"), m = dim(M, "matmul");

    if (M < tune_.gemm_min_rows) {
        const bool row = tune_.gemv == gemv_variant::row;
        const char* name = row ? (f16 ? "mul_mv_f16_f32_row" : "mul_mv_f32_f32_row")
                               : (f16 ? "mul_mv_f16_f32_wg" : "mul_mv_f32_f32_wg");
        const size_t wgs = tune_.gemv_wgs;
        // Rows per weight pass: 1 for decode, else k_mv_rows (one program each; a short last pass recomputes a row).
        const int rows = M == 1 ? 1 : k_mv_rows;
        cl_kernel kern =
            kernel("mul_mv.cl", name, "-DMV_ROWS=" + std::to_string(rows) + " -DWGS=" + std::to_string(wgs));
        set_args(kern, arg(w), arg(x), arg(out), k, n, m);
        const size_t groups_m = size_t((M + rows - 1) / rows);
        const size_t global[2] = {row ? size_t(N) : size_t(N) * wgs, groups_m};
        const size_t local[2] = {wgs, 1};
        launch(kern, name, 2, global, local);
        return;
    }
    if (use_clblast(w, M)) {
        log().debug("matmul {}x{}x{} {}: CLBlast", M, N, K, f16 ? "f16" : "f32");
        matmul_clblast(w, x, out);
        return;
    }
    if (tune_.mm == mm_variant::dot) {
        log().debug("matmul {}x{}x{} {}: tandem mul_mm dot", M, N, K, f16 ? "f16" : "f32");
        const char* name = f16 ? "mul_mm_f16_f32_dot" : "mul_mm_f32_f32_dot";
        cl_kernel kern = kernel("mul_mm.cl", name, tune_.mm_defines);
        set_args(kern, arg(w), arg(x), arg(out), k, n, m);
        const size_t global[2] = {(size_t(N) + tune_.mmd_block[0] - 1) / tune_.mmd_block[0],
                                  (size_t(M) + tune_.mmd_block[1] - 1) / tune_.mmd_block[1]};
        const size_t local[2] = {0, 0};
        launch(kern, name, 2, global, local);
        return;
    }
    log().debug("matmul {}x{}x{} {}: tandem mul_mm tiled", M, N, K, f16 ? "f16" : "f32");
    const char* name = f16 ? "mul_mm_f16_f32_tiled" : "mul_mm_f32_f32_tiled";
    cl_kernel kern = kernel("mul_mm.cl", name, tune_.mm_defines);
    set_args(kern, arg(w), arg(x), arg(out), k, n, m);
    const size_t global[2] = {round_up(size_t(N), tune_.mm_tile[0]) / tune_.mm_tile[0] * tune_.mm_local[0],
                              round_up(size_t(M), tune_.mm_tile[1]) / tune_.mm_tile[1] * tune_.mm_local[1]};
    launch(kern, name, 2, global, tune_.mm_local);
}

void opencl_backend::matmul_clblast(const tensor& w, const tensor& x, const tensor& out) {
    const int64_t K = w.ne[0], N = w.nrows(), M = x.nrows();
    cl_mem w_mem = arg(w).mem;
    size_t w_off = w.offset / 4;
    if (w.type == dtype::f16) {
        // CLBlast's HGEMM needs cl_khr_fp16 and f16 activations; widen the weights to f32 instead.
        w_mem = scratch(size_t(K * N) * 4);
        w_off = 0;
        cl_kernel conv = kernel("elementwise.cl", "convert_f16_f32");
        set_args(conv, arg(w), w_mem, cl_ulong(0), dim(K * N, "matmul"));
        const size_t global[1] = {size_t(K * N)}, local[1] = {0};
        launch(conv, "convert_f16_f32", 1, global, local);
    } else if (w.offset % 4 != 0) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "opencl: matmul: f32 weights at an unaligned offset");
    }
    if (x.offset % 4 != 0 || out.offset % 4 != 0)
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "opencl: matmul: f32 tensors at unaligned offsets");
    // Row-major out {M x N} = x {M x K} * w^T (w is N x K row-major).
    cl_command_queue q = queue_.get();
    const auto st =
        clblast::Gemm<float>(clblast::Layout::kRowMajor, clblast::Transpose::kNo, clblast::Transpose::kYes, size_t(M),
                             size_t(N), size_t(K), 1.f, arg(x).mem, x.offset / 4, size_t(K), w_mem, w_off, size_t(K),
                             0.f, arg(out).mem, out.offset / 4, size_t(N), &q, nullptr);
    if (st != clblast::StatusCode::kSuccess)
        throw error(TANDEM_ERR_BACKEND, "opencl: CLBlast SGEMM failed with status " + std::to_string(int(st)));
}

}  // namespace tandem::opencl
