// adamw and sum_sq launchers (kernels/train_optim.cl). adamw: one work-item per element, with the bias corrections
// from adamw_bias_corrections() (computed once on the host, in double). sum_sq: two dispatches, partial sums of
// fixed chunks into the backend's scratch buffer, then one work-item adding them in order: deterministic, and the
// chunking depends only on the element count and the device's reduction width.
#include <algorithm>

#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

namespace {

constexpr int64_t k_sum_sq_min_chunk = 4096;  // elements per work-group at least: launches stay few
constexpr int64_t k_sum_sq_max_groups = 1024;

}  // namespace

void opencl_backend::adamw(const tensor& param, const tensor& grad, const tensor& m, const tensor& v,
                           const adamw_params& p) {
    checks::adamw(param, grad, m, v, p);
    const adamw_corrections bc = adamw_bias_corrections(p);
    cl_kernel k = kernel("train_optim.cl", "adamw_f32");
    set_args(k, arg(param), arg(grad), arg(m), arg(v), dim(param.nelements(), "adamw"), p.lr, p.beta1, p.beta2, p.eps,
             p.weight_decay, p.grad_scale, bc.bc1, bc.bc2);
    const size_t global[1] = {size_t(param.nelements())}, local[1] = {0};
    launch(k, "adamw_f32", 1, global, local);
}

void opencl_backend::sum_sq(const tensor& x, const tensor& out) {
    checks::sum_sq(x, out);
    const int64_t n = x.nelements();
    const int64_t groups =
        std::clamp<int64_t>((n + k_sum_sq_min_chunk - 1) / k_sum_sq_min_chunk, 1, k_sum_sq_max_groups);
    const int64_t chunk = (n + groups - 1) / groups;
    const size_t wgs = tune().reduce_wgs;
    cl_mem partial = scratch(size_t(groups) * sizeof(float));
    cl_kernel k1 = kernel("train_optim.cl", "sum_sq_partial_f32", "-DWGS=" + std::to_string(wgs));
    set_args(k1, arg(x), dim(n, "sum_sq"), dim(chunk, "sum_sq"), partial);
    const size_t global1[1] = {size_t(groups) * wgs}, local1[1] = {wgs};
    launch(k1, "sum_sq_partial_f32", 1, global1, local1);
    cl_kernel k2 = kernel("train_optim.cl", "sum_sq_final_f32", "-DWGS=" + std::to_string(wgs));
    set_args(k2, partial, dim(groups, "sum_sq"), arg(out));
    const size_t global2[1] = {1}, local2[1] = {1};
    launch(k2, "sum_sq_final_f32", 1, global2, local2);
}

}  // namespace tandem::opencl
