// argmax launcher: tune().reduce_rows rows of tune().reduce_wgs work-items per work-group (kernels/argmax.cl).
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::argmax(const tensor& x, const tensor& out) {
    checks::argmax(x, out);
    const size_t wgs = tune().reduce_wgs, rows = tune().reduce_rows;
    cl_kernel k =
        kernel("argmax.cl", "argmax_f32_i32", "-DWGS=" + std::to_string(wgs) + " -DROWS=" + std::to_string(rows));
    set_args(k, arg(x), arg(out), dim(x.ne[0], "argmax"), dim(x.nrows(), "argmax"));
    const size_t global[2] = {wgs, size_t(x.nrows())};
    const size_t local[2] = {wgs, rows};
    launch(k, "argmax_f32_i32", 2, global, local);
}

}  // namespace tandem::opencl
