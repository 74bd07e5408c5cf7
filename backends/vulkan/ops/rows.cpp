// Launchers of the row-wise family: rms_norm, softmax and argmax, one work-group per row. Each invocation
// strides over the row (K / WG iterations per pass), checked against the device's loop budget. rms_norm (in
// every forward block) has a one-row-per-invocation variant for CPU-like devices.
#include <algorithm>

#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct rms_norm_push {
    uint32_t k, m, x_off, w_off, o_off;
    float eps;
};

struct row_push {
    uint32_t k, m, x_off, o_off;
};

}  // namespace

namespace {

// A work-group size for rows of k elements: up to 256, no wider than the row needs; throws when even the
// widest group would loop past the budget (rows of many millions of elements on lavapipe).
uint32_t row_group(const vk_backend& be, int64_t k, int passes, const char* op) {
    const uint32_t wg = be.group_size(uint32_t(std::clamp<int64_t>(k, 32, 256)));
    if (uint64_t(passes) * (uint64_t(k) / wg + 1) + 16 > be.loop_budget())
        throw error(TANDEM_ERR_UNSUPPORTED, std::string("vulkan: ") + op + " rows of " + std::to_string(k) +
                                                " elements exceed this device's loop limit");
    return wg;
}

}  // namespace

void vk_backend::rms_norm(const tensor& x, const tensor& w, float eps, const tensor& out) {
    checks::rms_norm(x, w, out);
    const int64_t k = x.ne[0], m = x.nrows();
    if (k == 0 || m == 0) return;
    const view vx = bind(x), vw = bind(w), vo = bind(out);
    const rms_norm_push pc{to_u32(k, "rms_norm row"), to_u32(m, "rms_norm rows"), vx.elem, vw.elem, vo.elem, eps};
    // CPU-like devices: one invocation per row (2 K iterations, or 2 K / 4 through texels) while that fits.
    if (cpu_kernels() && 2 * uint64_t(k) + 16 <= loop_budget()) {
        const uint32_t wg = group_size(64);
        const groups g = grid((uint64_t(m) + wg - 1) / wg);
        if (texel_reads() && k % 4 == 0 && vx.elem % 4 == 0 && vw.elem % 4 == 0) {
            run("rms_norm_f32_f32_texel", {wg}, {texel(vx, dtype::f32, 4), texel(vw, dtype::f32, 4), {vo, true}}, pc,
                g);
        } else {
            run("rms_norm_f32_f32_lane", {wg}, {{vx, false}, {vw, false}, {vo, true}}, pc, g);
        }
        return;
    }
    const uint32_t wg = row_group(*this, k, 2, "rms_norm");
    run("rms_norm_f32_f32", {wg}, {{vx, false}, {vw, false}, {vo, true}}, pc, grid(uint64_t(m)));
}

void vk_backend::softmax(const tensor& x, const tensor& out) {
    checks::softmax(x, out);
    const int64_t k = x.ne[0], m = x.nrows();
    if (k == 0 || m == 0) return;
    const uint32_t wg = row_group(*this, k, 2, "softmax");
    const view vx = bind(x), vo = bind(out);
    run("softmax_f32_f32", {wg}, {{vx, false}, {vo, true}},
        row_push{to_u32(k, "softmax row"), to_u32(m, "softmax rows"), vx.elem, vo.elem}, grid(uint64_t(m)));
}

void vk_backend::argmax(const tensor& x, const tensor& out) {
    checks::argmax(x, out);
    const int64_t k = x.ne[0], m = x.nrows();
    if (m == 0) return;
    const uint32_t wg = row_group(*this, k, 1, "argmax");
    const view vx = bind(x), vo = bind(out);
    run("argmax_f32_i32", {wg}, {{vx, false}, {vo, true}},
        row_push{to_u32(k, "argmax row"), to_u32(m, "argmax rows"), vx.elem, vo.elem}, grid(uint64_t(m)));
}

}  // namespace tandem::vk
