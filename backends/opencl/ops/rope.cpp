// rope launcher. The inverse frequencies are computed on the host exactly as cpu_ref computes them and kept
// on the device per (n_rot, freq_base), so kernel and oracle rotate by bit-identical angles.
#include <cmath>
#include <vector>

#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

void opencl_backend::rope(const tensor& x, const tensor& pos, const rope_params& p) {
    checks::rope(x, pos, p);
    const int32_t half_rot = p.n_rot / 2;
    if (half_rot == 0) return;
    auto key = std::make_pair(p.n_rot, p.freq_base);
    auto it = rope_tables_.find(key);
    if (it == rope_tables_.end()) {
        std::vector<float> inv(static_cast<size_t>(half_rot));
        for (int32_t i = 0; i < half_rot; ++i)
            inv[size_t(i)] = 1.f / std::pow(p.freq_base, float(2 * i) / float(p.n_rot));
        cl_int st = CL_SUCCESS;
        mem_handle m(
            clCreateBuffer(ctx_.get(), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, inv.size() * 4, inv.data(), &st));
        check(st, "clCreateBuffer (rope table)");
        it = rope_tables_.emplace(key, std::move(m)).first;
    }
    const int64_t rows = x.ne[1] * x.ne[2] * x.ne[3];
    cl_kernel k = kernel("rope.cl", "rope_f32");
    set_args(k, arg(x), arg(pos), it->second.get(), dim(x.ne[0], "rope"), dim(x.ne[1], "rope"), cl_int(half_rot),
             dim(rows, "rope"));
    const size_t global[2] = {size_t(half_rot), size_t(rows)}, local[2] = {0, 0};
    launch(k, "rope_f32", 2, global, local);
}

}  // namespace tandem::opencl
