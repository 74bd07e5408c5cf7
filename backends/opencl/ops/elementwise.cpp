// swiglu and add launchers: one work-item per element (kernels/elementwise.cl).
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::swiglu(const tensor& gate, const tensor& up, const tensor& out) {
    checks::same_f32("swiglu", gate, up, out);
    cl_kernel k = kernel("elementwise.cl", "swiglu_f32");
    set_args(k, arg(gate), arg(up), arg(out), dim(gate.nelements(), "swiglu"));
    const size_t global[1] = {size_t(gate.nelements())}, local[1] = {0};
    launch(k, "swiglu_f32", 1, global, local);
}

void opencl_backend::add(const tensor& a, const tensor& b, const tensor& out) {
    checks::same_f32("add", a, b, out);
    cl_kernel k = kernel("elementwise.cl", "add_f32");
    set_args(k, arg(a), arg(b), arg(out), dim(a.nelements(), "add"));
    const size_t global[1] = {size_t(a.nelements())}, local[1] = {0};
    launch(k, "add_f32", 1, global, local);
}

}  // namespace tandem::opencl
