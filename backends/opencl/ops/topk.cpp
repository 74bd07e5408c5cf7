// top_k launcher: tune().topk_wgs work-items per row, and on CPU devices (one work-item per row)
// tune().reduce_rows rows per work-group (kernels/topk.cl). One program per power of two >= k.
#include <string>

#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::top_k(const tensor& x, int32_t k, const tensor& out_ids, const tensor& out_vals) {
    checks::top_k(x, k, out_ids, out_vals);
    const size_t wgs = tune().topk_wgs, rows = wgs == 1 ? tune().reduce_rows : 1;
    int kmax = 1;
    while (kmax < k) kmax *= 2;
    cl_kernel kr =
        kernel("topk.cl", "top_k_f32_i32",
               "-DWGS=" + std::to_string(wgs) + " -DROWS=" + std::to_string(rows) + " -DKMAX=" + std::to_string(kmax));
    set_args(kr, arg(x), arg(out_ids), arg(out_vals), dim(x.ne[0], "top_k"), dim(x.nrows(), "top_k"), cl_int(k));
    const size_t global[2] = {wgs, size_t(x.nrows())};
    const size_t local[2] = {wgs, rows};
    launch(kr, "top_k_f32_i32", 2, global, local);
}

}  // namespace tandem::opencl
