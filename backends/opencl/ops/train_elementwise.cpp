// swiglu_back, scale and get_rows_back launchers (kernels/train_elementwise.cl): one work-item per element, and for
// get_rows_back one per column looping over the ids in order (deterministic accumulation, no float atomics).
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::swiglu_back(const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate,
                                 const tensor& d_up) {
    checks::swiglu_back(gate, up, dy, d_gate, d_up);
    cl_kernel k = kernel("train_elementwise.cl", "swiglu_back_f32");
    set_args(k, arg(gate), arg(up), arg(dy), arg(d_gate), arg(d_up), dim(gate.nelements(), "swiglu_back"));
    const size_t global[1] = {size_t(gate.nelements())}, local[1] = {0};
    launch(k, "swiglu_back_f32", 1, global, local);
}

void opencl_backend::scale(const tensor& x, float s, const tensor& out) {
    checks::scale(x, out);
    cl_kernel k = kernel("train_elementwise.cl", "scale_f32");
    set_args(k, arg(x), arg(out), dim(x.nelements(), "scale"), s);
    const size_t global[1] = {size_t(x.nelements())}, local[1] = {0};
    launch(k, "scale_f32", 1, global, local);
}

void opencl_backend::get_rows_back(const tensor& d_out, const tensor& ids, const tensor& d_table) {
    checks::get_rows_back(d_out, ids, d_table);
    cl_kernel k = kernel("train_elementwise.cl", "get_rows_back_f32");
    set_args(k, arg(d_out), arg(ids), arg(d_table), dim(d_table.ne[0], "get_rows_back"),
             dim(d_table.nrows(), "get_rows_back"), dim(ids.nelements(), "get_rows_back"), error_word());
    const size_t global[1] = {size_t(d_table.ne[0])}, local[1] = {0};
    launch(k, "get_rows_back_f32", 1, global, local);
}

}  // namespace tandem::opencl
