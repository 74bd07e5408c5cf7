// get_rows launcher (kernels/get_rows.cl): one work-item per output element of f32/f16 tables, one per
// 32-element block of Q8_0/Q4_0 tables (decoded in place: only the requested rows are ever dequantized).
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

void opencl_backend::get_rows(const tensor& table, const tensor& ids, const tensor& out) {
    checks::get_rows(table, ids, out);
    if (!supports(op::get_rows, table.type))
        throw error(TANDEM_ERR_UNSUPPORTED, "opencl: get_rows of " + std::string(dtype_name(table.type)));
    const bool quant = table.type == dtype::q8_0 || table.type == dtype::q4_0;
    const char* name = table.type == dtype::q8_0   ? "get_rows_q8_0_f32"
                       : table.type == dtype::q4_0 ? "get_rows_q4_0_f32"
                       : table.type == dtype::f16  ? "get_rows_f16_f32"
                                                   : "get_rows_f32_f32";
    cl_kernel k = kernel("get_rows.cl", name);
    set_args(k, arg(table), arg(ids), arg(out), dim(table.ne[0], "get_rows"), dim(table.nrows(), "get_rows"),
             dim(ids.nelements(), "get_rows"), error_word());
    const size_t global[2] = {size_t(quant ? table.ne[0] / 32 : table.ne[0]), size_t(ids.nelements())};
    const size_t local[2] = {0, 0};
    launch(k, name, 2, global, local);
}

}  // namespace tandem::opencl
