// attention launcher: one work-item per (query head, query row) of the fused online-softmax kernel
// (kernels/attention.cl), compiled per head size so its per-work-item q and output vectors live in registers.
// meta and slots may hold T >= M entries: walk-only ones (tokens already in the cache) after the query rows.
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

void opencl_backend::attention(const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
                               const tensor& slots, const attention_params& p, const tensor& out) {
    checks::attention(q, k_cache, v_cache, meta, slots, out);
    if (k_cache.type != dtype::f32 && k_cache.type != dtype::f16)
        throw error(TANDEM_ERR_UNSUPPORTED,
                    "opencl: attention over a " + std::string(dtype_name(k_cache.type)) + " cache");
    const int64_t d = q.ne[0], hq = q.ne[1], m = q.ne[2] * q.ne[3];
    if (d > 512) throw error(TANDEM_ERR_UNSUPPORTED, "opencl: attention head size " + std::to_string(d) + " > 512");
    const char* name = k_cache.type == dtype::f16 ? "attention_f16" : "attention_f32";
    cl_kernel k = kernel("attention.cl", name, "-DHEAD_DIM=" + std::to_string(d));
    set_args(k, arg(q), arg(k_cache), arg(v_cache), arg(meta), arg(slots), arg(out), dim(hq, "attention"),
             dim(k_cache.ne[0] / d, "attention"), dim(m, "attention"), dim(meta.nrows(), "attention"),
             dim(k_cache.nrows(), "attention"), p.scale, error_word());
    const size_t global[2] = {size_t(hq), size_t(m)}, local[2] = {0, 0};
    launch(k, name, 2, global, local);
}

}  // namespace tandem::opencl
