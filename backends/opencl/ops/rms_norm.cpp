// rms_norm launcher: tune().reduce_rows rows of tune().reduce_wgs work-items per work-group (kernels/rms_norm.cl).
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::rms_norm(const tensor& x, const tensor& w, float eps, const tensor& out) {
    checks::rms_norm(x, w, out);
    const size_t wgs = tune().reduce_wgs, rows = tune().reduce_rows;
    cl_kernel k =
        kernel("rms_norm.cl", "rms_norm_f32", "-DWGS=" + std::to_string(wgs) + " -DROWS=" + std::to_string(rows));
    set_args(k, arg(x), arg(w), arg(out), dim(x.ne[0], "rms_norm"), dim(x.nrows(), "rms_norm"), eps);
    const size_t global[2] = {wgs, size_t(x.nrows())};
    const size_t local[2] = {wgs, rows};
    launch(k, "rms_norm_f32", 2, global, local);
}

}  // namespace tandem::opencl
