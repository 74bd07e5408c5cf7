// Launchers of the row-wise and reduction training ops: rms_norm_back (a work-group per row, or on CPU-like devices
// one invocation per row), cross_entropy (a work-group per row), sum_sq (a deterministic two-stage reduction) and
// get_rows_back (an invocation per column, rows in order). Every loop is sized against the device's loop budget
// (lavapipe silently stops an invocation after 65,535 iterations): long rows are refused, long batches cut into
// ranges dispatched in order.
#include <algorithm>

#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct rms_norm_back_push {
    uint32_t k, m, x_off, w_off, dy_off, dx_off;
    float eps;
};

struct cross_entropy_push {
    uint32_t v, k, m, z_off, i_off, p_off, l_off, d_off;
    float grad_scale;
};

struct sum_push {
    uint32_t n, per, x_off, o_off;
};

struct get_rows_back_push {
    uint32_t k, rows, m0, m1, d_off, i_off, t_off;
};

// A work-group size for rows of k elements: up to 256, no wider than the row needs; throws when even the widest
// group would loop past the budget (`passes` strided passes plus `extra` iterations).
uint32_t row_group(const vk_backend& be, int64_t k, uint64_t passes, uint64_t extra, const char* op) {
    const uint32_t wg = be.group_size(uint32_t(std::clamp<int64_t>(k, 32, 256)));
    if (passes * (uint64_t(k) / wg + 1) + extra + 32 > be.loop_budget())
        throw error(TANDEM_ERR_UNSUPPORTED, std::string("vulkan: ") + op + " rows of " + std::to_string(k) +
                                                " elements exceed this device's loop limit");
    return wg;
}

}  // namespace

void vk_backend::rms_norm_back(const tensor& x, const tensor& w, const tensor& dy, float eps, const tensor& dx) {
    checks::rms_norm_back(x, w, dy, dx);
    const int64_t k = x.ne[0], m = x.nrows();
    if (k == 0 || m == 0) return;
    const view vx = bind(x), vw = bind(w), vy = bind(dy), vo = bind(dx);
    const rms_norm_back_push pc{
        to_u32(k, "rms_norm_back row"), to_u32(m, "rms_norm_back rows"), vx.elem, vw.elem, vy.elem, vo.elem, eps};
    const std::initializer_list<arg> args = {{vx, false}, {vw, false}, {vy, false}, {vo, true}};
    // CPU-like devices: one invocation per row (two passes of K) while that fits the budget.
    if (cpu_kernels() && 2 * uint64_t(k) + 16 <= loop_budget()) {
        const uint32_t wg = group_size(64);
        run("rms_norm_back_f32_f32_lane", {wg}, args, pc, grid((uint64_t(m) + wg - 1) / wg));
        return;
    }
    const uint32_t wg = row_group(*this, k, 2, 0, "rms_norm_back");
    run("rms_norm_back_f32_f32", {wg}, args, pc, grid(uint64_t(m)));
}

void vk_backend::cross_entropy(const tensor& z, const tensor& ids, const tensor& p, float grad_scale,
                               const tensor& loss, const tensor& d_logits) {
    checks::cross_entropy(z, ids, p, loss, d_logits);
    const int64_t v = z.ne[0], k = ids.ne[0], m = z.nrows();
    if (m == 0) return;
    // Three strided passes over the row; invocation 0 walks the k targets twice.
    const uint32_t wg = row_group(*this, v, 3, 2 * uint64_t(k), "cross_entropy");
    const view vz = bind(z), vi = bind(ids), vp = bind(p), vl = bind(loss), vd = bind(d_logits);
    const cross_entropy_push pc{to_u32(v, "cross_entropy vocabulary"),
                                to_u32(k, "cross_entropy targets"),
                                to_u32(m, "cross_entropy rows"),
                                vz.elem,
                                vi.elem,
                                vp.elem,
                                vl.elem,
                                vd.elem,
                                grad_scale};
    to_u32(v * m, "cross_entropy logits");
    run("cross_entropy_f32_f32", {wg}, {{vz, false}, {vi, false}, {vp, false}, {vl, true}, {vd, true}, status()}, pc,
        grid(uint64_t(m)));
}

void vk_backend::sum_sq(const tensor& x, const tensor& out) {
    checks::sum_sq(x, out);
    const int64_t n = x.nelements();
    const uint32_t wg = group_size(256);
    const view vx = bind(x), vo = bind(out);
    // Stage 1: enough elements per invocation for at most WG work-groups, so that stage 2 loops once per invocation.
    const uint64_t budget = loop_budget() > 64 ? loop_budget() - 64 : 1;
    const uint64_t per = std::clamp<uint64_t>((uint64_t(n) + uint64_t(wg) * wg - 1) / (uint64_t(wg) * wg), 1, budget);
    const uint64_t groups1 = std::max<uint64_t>(1, (uint64_t(n) + wg * per - 1) / (wg * per));
    const uint32_t n32 = to_u32(n, "sum_sq");
    if (groups1 == 1) {  // one work-group: straight into out (n = 0 writes 0)
        run("sum_sq_f32_f32", {wg}, {{vx, false}, {vo, true}}, sum_push{n32, uint32_t(per), vx.elem, vo.elem},
            groups{1, 1, 1});
        return;
    }
    const uint64_t per2 = (groups1 + wg - 1) / wg;
    if (per2 > budget) throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: sum_sq over too many elements");
    const view partial = scratch(scratch_sum_sq, VkDeviceSize(groups1) * 4);
    run("sum_sq_f32_f32", {wg}, {{vx, false}, {partial, true}}, sum_push{n32, uint32_t(per), vx.elem, 0},
        grid(groups1));
    run("sum_sq_f32_f32_final", {wg}, {{partial, false}, {vo, true}},
        sum_push{uint32_t(groups1), uint32_t(per2), 0, vo.elem}, groups{1, 1, 1});
}

void vk_backend::get_rows_back(const tensor& d_out, const tensor& ids, const tensor& d_table) {
    checks::get_rows_back(d_out, ids, d_table);
    const int64_t k = d_out.ne[0], m = d_out.nrows(), rows = d_table.nrows();
    if (k == 0 || m == 0) return;
    const uint32_t wg = group_size(uint32_t(std::clamp<int64_t>(k, 8, 64)));
    const view vd = bind(d_out), vi = bind(ids), vt = bind(d_table);
    to_u32(k * m, "get_rows_back d_out");
    to_u32(k * rows, "get_rows_back table");
    // One loop iteration per batch row: ranges of rows dispatched in order keep every invocation under the budget.
    const int64_t step = int64_t(loop_budget() > 64 ? loop_budget() - 64 : 1);
    for (int64_t m0 = 0; m0 < m; m0 += step) {
        const get_rows_back_push pc{uint32_t(k), uint32_t(rows), uint32_t(m0), uint32_t(std::min(m, m0 + step)),
                                    vd.elem,     vi.elem,        vt.elem};
        run("get_rows_back_f32_f32", {wg}, {{vd, false}, {vi, false}, {vt, true}, status()}, pc,
            grid((uint64_t(k) + wg - 1) / wg));
    }
}

}  // namespace tandem::vk
