// kv_write and kv_copy launchers (kernels/kv.cl). kv_copy stages the source rows in the backend's scratch
// buffer: the gather kernel finishes before the scatter kernel starts on the in-order queue, so a row that is
// both a source and a destination is read before it is overwritten.
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

namespace {
void require_cache_type(const tensor& cache, const char* op) {
    if (cache.type != dtype::f32 && cache.type != dtype::f16)
        throw error(TANDEM_ERR_UNSUPPORTED,
                    std::string("opencl: ") + op + " into a " + std::string(dtype_name(cache.type)) + " cache");
}
}  // namespace

void opencl_backend::kv_write(const tensor& src, const tensor& cache, const tensor& slots) {
    checks::kv_write(src, cache, slots);
    require_cache_type(cache, "kv_write");
    const char* name = cache.type == dtype::f16 ? "kv_write_f32_f16" : "kv_write_f32_f32";
    cl_kernel k = kernel("kv.cl", name);
    set_args(k, arg(src), arg(cache), arg(slots), dim(src.ne[0], "kv_write"), dim(cache.nrows(), "kv_write"),
             dim(src.nrows(), "kv_write"), error_word());
    const size_t global[2] = {size_t(src.ne[0]), size_t(src.nrows())}, local[2] = {0, 0};
    launch(k, name, 2, global, local);
}

void opencl_backend::kv_copy(const tensor& cache, const tensor& src, const tensor& dst) {
    checks::kv_copy(cache, src, dst);
    require_cache_type(cache, "kv_copy");
    const int64_t n = dim(src.nelements(), "kv_copy");
    if (n == 0) return;
    const size_t units = cache.row_bytes() / 2;
    cl_mem staged = scratch(units * 2 * size_t(n));
    const cl_int u = dim(int64_t(units), "kv_copy"), s = dim(cache.nrows(), "kv_copy");
    const size_t global[2] = {units, size_t(n)}, local[2] = {0, 0};
    cl_kernel gather = kernel("kv.cl", "kv_gather");
    set_args(gather, arg(cache), arg(src), staged, u, s, cl_int(n), error_word());
    launch(gather, "kv_gather", 2, global, local);
    cl_kernel scatter = kernel("kv.cl", "kv_scatter");
    set_args(scatter, arg(cache), arg(dst), staged, arg(src), u, s, cl_int(n), error_word());
    launch(scatter, "kv_scatter", 2, global, local);
}

}  // namespace tandem::opencl
