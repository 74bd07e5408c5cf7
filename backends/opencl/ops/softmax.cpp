// softmax launcher: tune().reduce_rows rows of tune().reduce_wgs work-items per work-group (kernels/softmax.cl).
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::softmax(const tensor& x, const tensor& out) {
    checks::softmax(x, out);
    const size_t wgs = tune().reduce_wgs, rows = tune().reduce_rows;
    cl_kernel k =
        kernel("softmax.cl", "softmax_f32", "-DWGS=" + std::to_string(wgs) + " -DROWS=" + std::to_string(rows));
    set_args(k, arg(x), arg(out), dim(x.ne[0], "softmax"), dim(x.nrows(), "softmax"));
    const size_t global[2] = {wgs, size_t(x.nrows())};
    const size_t local[2] = {wgs, rows};
    launch(k, "softmax_f32", 2, global, local);
}

}  // namespace tandem::opencl
