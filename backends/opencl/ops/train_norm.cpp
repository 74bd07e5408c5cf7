// rms_norm_back launcher: tune().reduce_rows rows of tune().reduce_wgs work-items per work-group, as rms_norm
// (kernels/train_norm.cl): one row per work-item on CPU devices, one work-group per row on GPUs.
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::rms_norm_back(const tensor& x, const tensor& w, const tensor& dy, float eps, const tensor& dx) {
    checks::rms_norm_back(x, w, dy, dx);
    const size_t wgs = tune().reduce_wgs, rows = tune().reduce_rows;
    cl_kernel k = kernel("train_norm.cl", "rms_norm_back_f32",
                         "-DWGS=" + std::to_string(wgs) + " -DROWS=" + std::to_string(rows));
    set_args(k, arg(x), arg(w), arg(dy), arg(dx), dim(x.ne[0], "rms_norm_back"), dim(x.nrows(), "rms_norm_back"), eps);
    const size_t global[2] = {wgs, size_t(x.nrows())};
    const size_t local[2] = {wgs, rows};
    launch(k, "rms_norm_back_f32", 2, global, local);
}

}  // namespace tandem::opencl
