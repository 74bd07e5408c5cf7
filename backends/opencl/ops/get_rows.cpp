// get_rows launcher: one work-item per output element (kernels/get_rows.cl).
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

void opencl_backend::get_rows(const tensor& table, const tensor& ids, const tensor& out) {
    checks::get_rows(table, ids, out);
    if (table.type != dtype::f32 && table.type != dtype::f16)
        throw error(TANDEM_ERR_UNSUPPORTED, "opencl: get_rows of " + std::string(dtype_name(table.type)));
    const char* name = table.type == dtype::f16 ? "get_rows_f16_f32" : "get_rows_f32_f32";
    cl_kernel k = kernel("get_rows.cl", name);
    set_args(k, arg(table), arg(ids), arg(out), dim(table.ne[0], "get_rows"), dim(table.nrows(), "get_rows"),
             dim(ids.nelements(), "get_rows"), error_word());
    const size_t global[2] = {size_t(table.ne[0]), size_t(ids.nelements())};
    const size_t local[2] = {0, 0};
    launch(k, name, 2, global, local);
}

}  // namespace tandem::opencl
