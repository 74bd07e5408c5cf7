// get_rows launcher: one work-item per output element of f32/f16 tables, one per 32-element block of Q8_0/Q4_0
// tables (kernels/get_rows.cl), one per 16-element chunk of Q4_K/Q6_K tables (kernels/get_rows_kquant.cl). Blocks
// are decoded in place: only the requested rows are ever dequantized.
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

void opencl_backend::get_rows(const tensor& table, const tensor& ids, const tensor& out) {
    checks::get_rows(table, ids, out);
    if (!supports(op::get_rows, table.type))
        throw error(TANDEM_ERR_UNSUPPORTED, "opencl: get_rows of " + std::string(dtype_name(table.type)));
    const dtype t = table.type;
    const bool kquant = t == dtype::q4_k || t == dtype::q6_k;
    // Work-items per row: elements, 32-element blocks or 16-element chunks.
    const int64_t per_item = kquant ? 16 : (t == dtype::q8_0 || t == dtype::q4_0) ? 32 : 1;
    const std::string name = "get_rows_" + std::string(dtype_name(t)) + "_f32";
    cl_kernel k = kernel(kquant ? "get_rows_kquant.cl" : "get_rows.cl", name.c_str());
    set_args(k, arg(table), arg(ids), arg(out), dim(table.ne[0], "get_rows"), dim(table.nrows(), "get_rows"),
             dim(ids.nelements(), "get_rows"), error_word());
    const size_t global[2] = {size_t(table.ne[0] / per_item), size_t(ids.nelements())};
    const size_t local[2] = {0, 0};
    launch(k, name.c_str(), 2, global, local);
}

}  // namespace tandem::opencl
