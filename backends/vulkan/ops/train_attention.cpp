// Launcher of attention_back for layouts of contiguous runs (shaders/train_attention_back*.comp), in five steps and
// without float atomics: (1) stats: per (row, q head, split) the {max, sum} of its part of the softmax row; (2) lse:
// per (row, q head) the row's logsumexp and delta = d_out . out; (3) dq: per (row, q head, split) the split's share
// of dq; (4) combine: the shares summed per (row, q head, d) when there are several splits; (5) dkv: per (kv slot,
// kv head) the sums over the rows that see the slot and the grouped query heads, for dk and dv. The split count
// bounds the loops of (1) and (3) and row ranges dispatched in order bound those of (5), so that no invocation runs
// past the device's loop budget (lavapipe: 65,535 iterations, silently). Tree rows and runs outside k / v set status
// bits (the error surfaces at the next synchronize or download) and get zeros.
#include <algorithm>

#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

// Mirrors shaders/include/attention_back.glsl.
struct attention_back_push {
    uint32_t hq, group, m, s, stride, q_off, k_off, v_off, meta_off, o_off, go_off, dq_off, dk_off, dv_off, n_split;
    float scale;
    uint32_t st_off, ri_off, pq_off, r0, r1, accumulate;
};

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

void vk_backend::attention_back(const tensor& q, const tensor& k, const tensor& v, const tensor& meta,
                                const tensor& out, const tensor& d_out, const attention_params& p, const tensor& dq,
                                const tensor& dk, const tensor& dv) {
    checks::attention_back(q, k, v, meta, out, d_out, dq, dk, dv);
    const int64_t d = q.ne[0], hq = q.ne[1], m = q.ne[2], s = k.nrows();
    const int64_t hkv = k.ne[0] / d, group = hq / hkv;
    if (s == 0 && m == 0) return;
    const uint64_t budget = loop_budget();
    const uint64_t ud = uint64_t(d), ug = uint64_t(group);

    // Splits of the row side: loop iterations of stats ~ D + part (D + 2), of lse ~ 2 n + D, of dq ~ 3 D + part
    // (2 D + 3).
    uint64_t n_split = 1;
    for (;; n_split += std::max<uint64_t>(1, n_split / 4)) {
        const uint64_t part = ceil_div(uint64_t(s), n_split);
        const uint64_t stats = ud + part * (ud + 2) + 64, dq_cost = 3 * ud + part * (2 * ud + 3) + 64;
        if (std::max(stats, dq_cost) <= budget && 2 * n_split + ud + 64 <= budget) break;
        if (n_split > uint64_t(s) + 1 || 2 * n_split + ud + 64 > budget)
            throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: attention_back of head size " + std::to_string(d) +
                                                    " exceeds this device's loop limit");
    }
    // Rows per dkv dispatch: ~ 4 D fixed, then per row 2 + G (2 D + 3).
    const uint64_t per_row = 2 + ug * (2 * ud + 3);
    if (4 * ud + 64 + per_row > budget)
        throw error(TANDEM_ERR_UNSUPPORTED,
                    "vulkan: attention_back of head size " + std::to_string(d) + " exceeds this device's loop limit");
    const int64_t rows_step = int64_t((budget - 4 * ud - 64) / per_row);

    const uint64_t pairs = uint64_t(m) * uint64_t(hq);
    const uint64_t st_floats = pairs * n_split * 2, ri_floats = pairs * 2;
    const uint64_t pq_floats = n_split > 1 ? pairs * n_split * ud : 0;
    const uint64_t scratch_floats = st_floats + ri_floats + pq_floats;
    to_u32(int64_t(scratch_floats), "attention_back scratch");
    to_u32(int64_t(pairs * n_split), "attention_back rows");
    to_u32(int64_t(pairs * ud), "attention_back q");
    to_u32(s * k.ne[0], "attention_back k");
    const view sc = scratch(scratch_attention_back, VkDeviceSize(std::max<uint64_t>(scratch_floats, 1)) * 4);

    const view vq = bind(q), vk = bind(k), vv = bind(v), vm = bind(meta), vo = bind(out), vg = bind(d_out);
    const view vdq = bind(dq), vdk = bind(dk), vdv = bind(dv);
    attention_back_push pc{uint32_t(hq),
                           uint32_t(group),
                           uint32_t(m),
                           uint32_t(s),
                           uint32_t(k.ne[0]),
                           vq.elem,
                           vk.elem,
                           vv.elem,
                           vm.elem,
                           vo.elem,
                           vg.elem,
                           vdq.elem,
                           vdk.elem,
                           vdv.elem,
                           uint32_t(n_split),
                           p.scale,
                           0,
                           uint32_t(st_floats),
                           uint32_t(st_floats + ri_floats),
                           0,
                           0,
                           0};
    const uint32_t wg = group_size(64);
    const uint32_t spec_d = uint32_t(d);
    if (pairs > 0) {
        const groups g = grid(ceil_div(pairs * n_split, wg));
        run("attention_back_f32_stats", {wg, spec_d}, {{vq, false}, {vk, false}, {vm, false}, {sc, true}, status()}, pc,
            g);
        run("attention_back_f32_lse", {wg, spec_d}, {{vo, false}, {vg, false}, {sc, true}}, pc,
            grid(ceil_div(pairs, wg)));
        run("attention_back_f32_dq", {wg, spec_d},
            {{vq, false}, {vk, false}, {vv, false}, {vm, false}, {vg, false}, {sc, true}, {vdq, true}}, pc, g);
        if (n_split > 1)
            run("attention_back_f32_combine", {wg, spec_d}, {{sc, false}, {vdq, true}}, pc,
                grid(ceil_div(pairs * ud, wg)));
    }
    if (s == 0) return;
    const groups gs = grid(ceil_div(uint64_t(s) * uint64_t(hkv), wg));
    // M = 0 still writes zeros: one empty range.
    for (int64_t r0 = 0; r0 < std::max<int64_t>(m, 1); r0 += rows_step) {
        pc.r0 = uint32_t(r0);
        pc.r1 = uint32_t(std::min(m, r0 + rows_step));
        pc.accumulate = r0 > 0 ? 1u : 0u;
        run("attention_back_f32_dkv", {wg, spec_d},
            {{vq, false}, {vk, false}, {vv, false}, {vm, false}, {vg, false}, {sc, false}, {vdk, true}, {vdv, true}},
            pc, gs);
    }
}

}  // namespace tandem::vk
