// Launcher of rope: one invocation per rotated pair of x {D, H, M}, in place. The inverse frequencies come
// from a per-(n_rot, base) table built on the host with cpu_ref's exact float expression (plan once).
#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"

namespace tandem::vk {

namespace {

struct rope_push {
    uint32_t d, h, m, half_rot, x_off, p_off, f_off;
};

}  // namespace

void vk_backend::rope(const tensor& x, const tensor& pos, const rope_params& p) {
    checks::rope(x, pos, p);
    const int64_t d = x.ne[0], h = x.ne[1], m = x.ne[2] * x.ne[3];
    const int64_t half_rot = p.n_rot / 2;
    const uint64_t n = uint64_t(half_rot) * uint64_t(h) * uint64_t(m);
    if (n == 0) return;
    const uint32_t wg = group_size(256);
    const view vx = bind(x), vp = bind(pos), vf = rope_table(p.n_rot, p.freq_base);
    to_u32(int64_t(n), "rope");
    run("rope_f32_f32", {wg}, {{vx, true}, {vp, false}, {vf, false}},
        rope_push{uint32_t(d), uint32_t(h), uint32_t(m), uint32_t(half_rot), vx.elem, vp.elem, vf.elem},
        grid((n + wg - 1) / wg));
}

}  // namespace tandem::vk
