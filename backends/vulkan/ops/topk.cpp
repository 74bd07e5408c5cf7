// top_k launcher: shaders/topk.comp in passes. The first pass cuts each row into chunks and writes the best k
// of each chunk as a list (value, id); each merge pass selects the best k of groups of those lists, until one
// list per row remains, written to out_vals / out_ids. A chunk is sized so that no invocation loops past the
// device's budget (lavapipe) and holds at least 2 k items, so each merge pass halves the lists or better.
#include <algorithm>
#include <string>

#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct top_k_push {
    uint32_t n, m, k, parts, chunk, val_off, idx_off, ov_off, oi_off;
};

uint64_t log2_ceil(uint64_t v) {
    uint64_t l = 0;
    while ((uint64_t(1) << l) < v) ++l;
    return l;
}

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

struct top_k_plan {
    uint32_t wg = 1;
    uint64_t chunk = 1;  // items per work-group
};

// The widest work-group (up to 64) whose chunk of >= 2 k items fits the loop budget: per invocation
// ceil(chunk / WG) * k iterations to scan and insert, k * (1 + log2 WG) to merge (shaders/topk.comp); on lavapipe
// a plan of 65,000 by this count ran whole and one of ~100,000 was cut near 65,500. At most 256 items per
// invocation, so that long rows still spread over many work-groups.
top_k_plan plan_top_k(const vk_backend& be, int32_t k) {
    const uint64_t kk = uint64_t(k), budget = be.loop_budget();
    for (uint32_t wg = be.group_size(64);; wg /= 2) {
        const uint64_t fixed = kk * (1 + log2_ceil(wg)) + 16;
        const uint64_t per_invocation = budget > fixed ? std::min<uint64_t>(256, (budget - fixed) / kk) : 0;
        if (per_invocation * wg >= 2 * kk) return {wg, per_invocation * wg};
        if (wg == 1) break;
    }
    throw error(TANDEM_ERR_UNSUPPORTED,
                "vulkan: top_k with k = " + std::to_string(k) + " exceeds this device's loop limit");
}

}  // namespace

void vk_backend::top_k(const tensor& x, int32_t k, const tensor& out_ids, const tensor& out_vals) {
    checks::top_k(x, k, out_ids, out_vals);
    const int64_t n = x.ne[0], m = x.nrows();
    if (m == 0) return;
    const top_k_plan p = plan_top_k(*this, k);
    const uint32_t wg = p.wg, ku = uint32_t(k), mu = to_u32(m, "top_k rows"), chunk = uint32_t(p.chunk);
    to_u32(m * n + int64_t(p.chunk), "top_k input");
    uint64_t parts = ceil_div(uint64_t(n), p.chunk);
    const view vx = bind(x), vi = bind(out_ids), vv = bind(out_vals);
    if (parts == 1) {
        run("top_k_f32_i32", {wg}, {{vx, false}, {vv, true}, {vi, true}},
            top_k_push{uint32_t(n), mu, ku, 1, chunk, vx.elem, 0, vv.elem, vi.elem}, grid(uint64_t(m)));
        return;
    }
    // Lists between passes: four scratch regions, values and ids of two generations that alternate.
    const uint64_t list_elems = uint64_t(m) * parts * uint64_t(k);
    to_u32(int64_t(list_elems), "top_k lists");
    const VkDeviceSize align = limits().storage_align;
    const VkDeviceSize region = (VkDeviceSize(list_elems) * 4 + align - 1) / align * align;
    const view s = scratch(scratch_top_k, 4 * region);
    auto sub = [&](int r) {
        view v = s;
        v.info.offset += VkDeviceSize(r) * region;
        v.info.range = region;
        v.elem = 0;
        return v;
    };
    run("top_k_f32_i32", {wg}, {{vx, false}, {sub(0), true}, {sub(1), true}},
        top_k_push{uint32_t(n), mu, ku, uint32_t(parts), chunk, vx.elem, 0, 0, 0}, grid(uint64_t(m) * parts));
    for (int cur = 0; parts > 1; cur = 1 - cur) {
        const uint64_t items = parts * uint64_t(k);
        const uint64_t next = ceil_div(items, p.chunk);
        const view in_v = sub(2 * cur), in_i = sub(2 * cur + 1);
        if (next == 1) {
            run("top_k_f32_i32_merge", {wg}, {{in_v, false}, {in_i, false}, {vv, true}, {vi, true}},
                top_k_push{uint32_t(items), mu, ku, 1, chunk, 0, 0, vv.elem, vi.elem}, grid(uint64_t(m)));
        } else {
            run("top_k_f32_i32_merge", {wg},
                {{in_v, false}, {in_i, false}, {sub(2 - 2 * cur), true}, {sub(3 - 2 * cur), true}},
                top_k_push{uint32_t(items), mu, ku, uint32_t(next), chunk, 0, 0, 0, 0}, grid(uint64_t(m) * next));
        }
        parts = next;
    }
}

}  // namespace tandem::vk
