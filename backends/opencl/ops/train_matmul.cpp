// matmul_t and weight_grad launchers, the two backward passes of matmul (kernels/train_matmul.cl). matmul_t reads
// f32 / f16 / Q8_0 / Q4_0 / Q4_K / Q6_K weights in place: one work-item per (column block, k_mt_rows rows of dy).
// weight_grad: one work-item per (k_wg_cols columns, k_wg_rows rows of dw), work-group sizes left to launch() (device
// query).
#include <string>

#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

namespace {

constexpr int k_mt_rows = 4;  // dy rows sharing one weight decode (MT_ROWS)
constexpr int k_wg_rows = 4;  // dw rows sharing one x load (WG_TN)
constexpr int k_wg_cols = 8;  // dw columns per work-item (one float8 of x)

std::string train_matmul_defines() {
    return "-DMT_ROWS=" + std::to_string(k_mt_rows) + " -DWG_TN=" + std::to_string(k_wg_rows);
}

// Columns one work-item of matmul_t covers: one decode of the weight type.
int64_t matmul_t_block(dtype t) {
    switch (t) {
        case dtype::f32:  // two float16 lanes
        case dtype::f16:
        case dtype::q8_0:  // one block
        case dtype::q4_0:
            return 32;
        case dtype::q4_k:
        case dtype::q6_k:
            return 16;  // a chunk of a 256-weight super-block
        default:
            return 0;
    }
}

}  // namespace

void opencl_backend::matmul_t(const tensor& w, const tensor& dy, const tensor& dx) {
    checks::matmul_t(w, dy, dx);
    const int64_t block = matmul_t_block(w.type);
    if (block == 0 || !supports(op::matmul_t, w.type))
        throw error(TANDEM_ERR_UNSUPPORTED, "opencl: matmul_t of " + std::string(dtype_name(w.type)) + " weights");
    const int64_t K = w.ne[0], N = w.nrows(), M = dy.nrows();
    const auto info = dtype_info(uint32_t(w.type));
    if (K % int64_t(info->block_size) != 0)
        throw error(TANDEM_ERR_INTERNAL, "matmul_t: row of " + std::to_string(K) + " " +
                                             std::string(dtype_name(w.type)) + " weights is not whole blocks");
    if (K == 0 || M == 0) return;
    const std::string name = "matmul_t_" + std::string(dtype_name(w.type)) + "_f32";
    cl_kernel k = kernel("train_matmul.cl", name.c_str(), train_matmul_defines());
    set_args(k, arg(w), arg(dy), arg(dx), dim(K, "matmul_t"), dim(N, "matmul_t"), dim(M, "matmul_t"));
    const size_t global[2] = {size_t((K + block - 1) / block), size_t((M + k_mt_rows - 1) / k_mt_rows)};
    const size_t local[2] = {0, 0};
    launch(k, name.c_str(), 2, global, local);
}

void opencl_backend::weight_grad(const tensor& dy, const tensor& x, float alpha, float beta, const tensor& dw) {
    checks::weight_grad(dy, x, beta, dw);
    const int64_t K = x.ne[0], N = dy.ne[0], M = x.nrows();
    cl_kernel k = kernel("train_matmul.cl", "weight_grad_f32", train_matmul_defines());
    set_args(k, arg(dy), arg(x), arg(dw), dim(K, "weight_grad"), dim(N, "weight_grad"), dim(M, "weight_grad"), alpha,
             beta);
    const size_t global[2] = {size_t((K + k_wg_cols - 1) / k_wg_cols), size_t((N + k_wg_rows - 1) / k_wg_rows)};
    const size_t local[2] = {0, 0};
    launch(k, "weight_grad_f32", 2, global, local);
}

}  // namespace tandem::opencl
