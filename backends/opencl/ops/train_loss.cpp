// cross_entropy launcher (kernels/train_loss.cl): tune().reduce_rows rows of tune().reduce_wgs work-items per
// work-group, as softmax: one row per work-item on CPU devices, one work-group per row (local reductions over the
// vocabulary) on GPUs. Target ids outside the vocabulary are reported through the device error word.
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::cross_entropy(const tensor& z, const tensor& ids, const tensor& p, float grad_scale,
                                   const tensor& loss, const tensor& d_logits) {
    checks::cross_entropy(z, ids, p, loss, d_logits);
    // Rows of a whole vocabulary are long enough to be work-groups of their own (a row is ~100x a group's launch
    // cost on PoCL): packing reduce_rows (64 on CPU devices) of them into one group would put a whole batch of
    // M <= 64 positions on one core. (Not timed: the machine was shared while this was written.)
    const size_t wgs = tune().reduce_wgs, rows = z.ne[0] >= 4096 ? 1 : tune().reduce_rows;
    cl_kernel k = kernel("train_loss.cl", "cross_entropy_f32",
                         "-DWGS=" + std::to_string(wgs) + " -DROWS=" + std::to_string(rows));
    set_args(k, arg(z), arg(ids), arg(p), arg(loss), arg(d_logits), dim(z.ne[0], "cross_entropy"),
             dim(ids.ne[0], "cross_entropy"), dim(z.nrows(), "cross_entropy"), grad_scale, error_word());
    const size_t global[2] = {wgs, size_t(z.nrows())};
    const size_t local[2] = {wgs, rows};
    launch(k, "cross_entropy_f32", 2, global, local);
}

}  // namespace tandem::opencl
