// Launcher of the fused attention: attention_<cache> (cooperative work-groups, for GPUs) or
// attention_<cache>_lane (one invocation per row and group of query heads, for CPU-like devices) over
// (split, ...) work-groups, then, when the context was split, attention_combine_f32 merges the partial
// softmax states. Split p covers part p of every row's contiguous run and part p of its tree walk. The split
// count covers two needs: on loop-limited devices (lavapipe) no invocation may loop past the budget, so long
// contexts and deep trees are cut into parts sized from the kernel's loop cost; and a decode step with few
// (row, head) pairs gets parts for parallelism. Rows beyond the work-group count limit go in several dispatches.
#include <algorithm>

#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct attention_push {
    uint32_t hq, group, m, s, stride, q_off, k_off, v_off, meta_off, slots_off, o_off, n_split;
    float scale;
    uint32_t row_base, walk_limit, tree_chunk, rows, t;
};

struct combine_push {
    uint32_t hq, d, n_split, p_off, o_off, row_base;
};

uint64_t log2_ceil(uint64_t v) {
    uint64_t l = 0;
    while ((uint64_t(1) << l) < v) ++l;
    return l;
}

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

struct split_plan {
    uint64_t n_split = 1, tree_chunk = 1, walk_limit = 1;
};

// Loop iterations one invocation runs for `c` contiguous slots, `t` tree nodes after skipping `skip`.
struct loop_cost {
    bool lane;
    uint64_t wg, per_slot, per_block, fixed;
    uint64_t operator()(uint64_t c, uint64_t t, uint64_t skip) const {
        if (lane) return c * per_slot + skip + t * (per_slot + 2) + fixed;
        return ceil_div(c, wg) * per_block + skip + t + (ceil_div(t, wg) + 1) * per_block + fixed;
    }
};

split_plan plan_splits(const loop_cost& cost, uint64_t budget, uint64_t slots, uint64_t entries, uint64_t min_split) {
    split_plan p;
    // The walking invocation visits one node per iteration: deeper trees are refused, not truncated.
    p.walk_limit = std::max<uint64_t>(1, std::min(entries, budget / 8));
    for (uint64_t n = std::max<uint64_t>(1, min_split);; n += std::max<uint64_t>(1, n / 4)) {
        const uint64_t t = ceil_div(p.walk_limit, n);
        if (cost(ceil_div(slots, n), t, std::min((n - 1) * t, p.walk_limit)) <= budget) {
            p.n_split = n;
            p.tree_chunk = t;
            return p;
        }
        if (n > slots + p.walk_limit) break;
    }
    throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: attention of this head size exceeds the device's loop limit");
}

}  // namespace

void vk_backend::attention(const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
                           const tensor& slots, const attention_params& p, const tensor& out) {
    checks::attention(q, k_cache, v_cache, meta, slots, out);
    if (!supports(op::attention, k_cache.type))
        throw error(TANDEM_ERR_UNSUPPORTED,
                    "vulkan: attention over a " + std::string(dtype_name(k_cache.type)) + " cache");
    const int64_t d = q.ne[0], hq = q.ne[1], m = q.ne[2], s = k_cache.nrows();
    const int64_t hkv = k_cache.ne[0] / d, group = hq / hkv, t = meta.nrows();
    if (m == 0 || hq == 0) return;
    const bool lane = cpu_kernels();
    const uint32_t wg = group_size(64);
    const uint32_t dpt = uint32_t((d + wg - 1) / wg);
    // Lane variant: G query heads of one kv head per invocation, keeping G * D accumulators in registers.
    uint32_t g = 1;
    for (uint32_t c = 1; c <= uint32_t(group); ++c)
        if (group % c == 0 && int64_t(c) * d <= 256) g = c;
    if (!lane && (uint64_t(d) + 3 * wg) * 4 + 64 > limits().max_shared_bytes)
        throw error(TANDEM_ERR_UNSUPPORTED,
                    "vulkan: attention head size " + std::to_string(d) + " exceeds shared memory");

    loop_cost cost{lane, wg, 0, 0, 0};
    if (lane) {
        // Per slot: the q.k loop and the V loop over D (each with G heads), the softmax update of G heads.
        cost.per_slot = 2 * uint64_t(d) * (g + 1) + 2 * g + 8;
        cost.fixed = 3 * uint64_t(d) * g + 64;
    } else {
        // Per block of WG slots: q.k (D), V (<= 2 D for D <= WG, D + WG otherwise), two tree reductions.
        cost.per_block = uint64_t(d) + std::max<uint64_t>(2 * uint64_t(d), uint64_t(d) + wg) + 2 * log2_ceil(wg) + 8;
        cost.fixed = 4 * uint64_t(dpt) + 4 * log2_ceil(wg) + 64;
    }
    const uint64_t items = uint64_t(m) * uint64_t(lane ? hq / g : hq);
    const uint64_t parallel =
        items < 64 && s > 1024 ? std::min<uint64_t>(ceil_div(uint64_t(s), 256), ceil_div(64, items)) : 1;
    const split_plan plan = plan_splits(cost, loop_budget(), uint64_t(s), uint64_t(t), parallel);
    const uint64_t n_split = plan.n_split;
    if (n_split > limits().max_group_count[0] || uint64_t(hq) > limits().max_group_count[1])
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: attention launch too large");

    const view vq = bind(q), vk = bind(k_cache), vv = bind(v_cache), vm = bind(meta), vs = bind(slots), vo = bind(out);
    const uint64_t pairs = uint64_t(m) * uint64_t(hq);
    view target = vo;
    if (n_split > 1) target = scratch(scratch_attention, VkDeviceSize(pairs) * n_split * VkDeviceSize(d + 2) * 4);
    to_u32(int64_t(pairs * n_split * uint64_t(d + 2)), "attention partial results");
    to_u32(s * k_cache.ne[0], "attention cache");

    // The lane variant reads K and V as 4-wide texels when the rows allow it (see attention_lane.comp).
    const uint64_t cache_texels = uint64_t(s) * uint64_t(k_cache.ne[0]) / 4 + 1;
    const bool use_texels = lane && texel_reads() && d % 4 == 0 && k_cache.ne[0] % 4 == 0 && vk.elem % 4 == 0 &&
                            vv.elem % 4 == 0 && cache_texels <= limits().max_texel_elements;
    const std::string variant = std::string(k_cache.type == dtype::f16 ? "attention_f16" : "attention_f32") +
                                (lane ? "_lane" : "") + (use_texels ? "_texel" : "");
    const uint64_t per_row = lane ? uint64_t(hq / g) : 1;
    const int64_t rows_per_dispatch =
        lane ? int64_t(uint64_t(limits().max_group_count[1]) * wg / per_row) : int64_t(limits().max_group_count[2]);
    for (int64_t r0 = 0; r0 < m; r0 += rows_per_dispatch) {
        const int64_t rows = std::min(rows_per_dispatch, m - r0);
        const attention_push pc{uint32_t(hq),
                                uint32_t(group),
                                uint32_t(m),
                                uint32_t(s),
                                uint32_t(k_cache.ne[0]),
                                vq.elem,
                                vk.elem,
                                vv.elem,
                                vm.elem,
                                vs.elem,
                                target.elem,
                                uint32_t(n_split),
                                p.scale,
                                uint32_t(r0),
                                uint32_t(plan.walk_limit),
                                uint32_t(plan.tree_chunk),
                                uint32_t(rows),
                                to_u32(t, "attention meta")};
        const groups lane_groups{uint32_t(n_split), uint32_t(ceil_div(uint64_t(rows) * per_row, wg)), 1};
        if (use_texels) {
            run(variant.c_str(), {wg, uint32_t(d), g},
                {{vq, false},
                 texel(vk, k_cache.type, 4),
                 texel(vv, v_cache.type, 4),
                 {vm, false},
                 {vs, false},
                 {target, true},
                 status()},
                pc, lane_groups);
            continue;
        }
        const std::initializer_list<arg> args = {{vq, false}, {vk, false},    {vv, false}, {vm, false},
                                                 {vs, false}, {target, true}, status()};
        if (lane) {
            run(variant.c_str(), {wg, uint32_t(d), g}, args, pc,
                groups{uint32_t(n_split), uint32_t(ceil_div(uint64_t(rows) * per_row, wg)), 1});
        } else {
            run(variant.c_str(), {wg, uint32_t(d), dpt}, args, pc,
                groups{uint32_t(n_split), uint32_t(hq), uint32_t(rows)});
        }
    }
    if (n_split == 1) return;
    const uint32_t cwg = group_size(uint32_t(std::clamp<int64_t>(d, 1, 64)));
    const int64_t rows_per_combine = limits().max_group_count[1];
    for (int64_t r0 = 0; r0 < m; r0 += rows_per_combine) {
        const int64_t rows = std::min(rows_per_combine, m - r0);
        run("attention_combine_f32", {cwg}, {{target, false}, {vo, true}},
            combine_push{uint32_t(hq), uint32_t(d), uint32_t(n_split), target.elem, vo.elem, uint32_t(r0)},
            groups{uint32_t(hq), uint32_t(rows), 1});
    }
}

}  // namespace tandem::vk
