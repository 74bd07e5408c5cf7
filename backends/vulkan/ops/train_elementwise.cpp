// Launchers of the element-wise training ops: scale, swiglu_back and adamw (shaders/train_elementwise.comp), one
// element per invocation: no shader loop, nothing for lavapipe's loop limit to count. Outputs may alias inputs as
// backends/backend.h allows; each invocation reads its element of every input before writing.
#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct scale_push {
    uint32_t n, x_off, o_off;
    float s;
};

struct swiglu_back_push {
    uint32_t n, g_off, u_off, dy_off, dg_off, du_off;
};

struct adamw_push {
    uint32_t n, p_off, g_off, m_off, v_off;
    float lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2;
};

}  // namespace

void vk_backend::scale(const tensor& x, float s, const tensor& out) {
    checks::scale(x, out);
    const int64_t n = x.nelements();
    if (n == 0) return;
    const uint32_t wg = group_size(256);
    const view vx = bind(x), vo = bind(out);
    run("scale_f32_f32", {wg}, {{vx, false}, {vo, true}}, scale_push{to_u32(n, "scale"), vx.elem, vo.elem, s},
        grid((uint64_t(n) + wg - 1) / wg));
}

void vk_backend::swiglu_back(const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate,
                             const tensor& d_up) {
    checks::swiglu_back(gate, up, dy, d_gate, d_up);
    const int64_t n = gate.nelements();
    if (n == 0) return;
    const uint32_t wg = group_size(256);
    const view vg = bind(gate), vu = bind(up), vy = bind(dy), vdg = bind(d_gate), vdu = bind(d_up);
    run("swiglu_back_f32_f32", {wg}, {{vg, false}, {vu, false}, {vy, false}, {vdg, true}, {vdu, true}},
        swiglu_back_push{to_u32(n, "swiglu_back"), vg.elem, vu.elem, vy.elem, vdg.elem, vdu.elem},
        grid((uint64_t(n) + wg - 1) / wg));
}

void vk_backend::adamw(const tensor& param, const tensor& grad, const tensor& m, const tensor& v,
                       const adamw_params& p) {
    checks::adamw(param, grad, m, v, p);
    const int64_t n = param.nelements();
    if (n == 0) return;
    const adamw_corrections bc = adamw_bias_corrections(p);
    const uint32_t wg = group_size(256);
    const view vp = bind(param), vg = bind(grad), vm = bind(m), vv = bind(v);
    const adamw_push pc{to_u32(n, "adamw"), vp.elem,      vg.elem, vm.elem, vv.elem, p.lr, p.beta1, p.beta2, p.eps,
                        p.weight_decay,     p.grad_scale, bc.bc1,  bc.bc2};
    run("adamw_f32_f32", {wg}, {{vp, true}, {vg, false}, {vm, true}, {vv, true}}, pc,
        grid((uint64_t(n) + wg - 1) / wg));
}

}  // namespace tandem::vk
