// Launchers of the KV-cache family. kv_write scatters f32 rows into an f32/f16 cache; kv_copy gathers the
// source rows' raw bits into scratch, then (after the barrier the recorder places between the two
// dispatches) scatters them to the destination rows, so every read happens before any write.
#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct kv_push {
    uint32_t k, n, slots, c_off, s_off, i_off, j_off, err, use_check;
};

constexpr uint32_t k_err_kv_write = 2, k_err_kv_copy = 4;  // shaders/include/common.glsl

// Invocations per row: one per element (f32) or per 32-bit word a row of k halves can touch (f16 scatter).
uint64_t per_row(dtype cache, int64_t k, bool scatter) {
    return cache == dtype::f16 && scatter ? uint64_t(k / 2 + 1) : uint64_t(k);
}

}  // namespace

void vk_backend::kv_write(const tensor& src, const tensor& cache, const tensor& slots) {
    checks::kv_write(src, cache, slots);
    if (!supports(op::kv_write, cache.type))
        throw error(TANDEM_ERR_UNSUPPORTED,
                    "vulkan: kv_write into a " + std::string(dtype_name(cache.type)) + " cache");
    const int64_t k = cache.ne[0], n = src.nrows();
    if (k == 0 || n == 0) return;
    const uint32_t wg = group_size(256);
    const view vc = bind(cache), vs = bind(src), vi = bind(slots);
    const uint64_t total = per_row(cache.type, k, true) * uint64_t(n);
    to_u32(int64_t(total), "kv_write");
    const kv_push pc{uint32_t(k), uint32_t(n),    to_u32(cache.nrows(), "cache rows"),
                     vc.elem,     vs.elem,        vi.elem,
                     vi.elem,     k_err_kv_write, 0};
    run(cache.type == dtype::f16 ? "kv_write_f32_f16" : "kv_write_f32_f32", {wg},
        {{vc, true}, {vs, false}, {vi, false}, {vi, false}, status()}, pc, grid((total + wg - 1) / wg));
}

void vk_backend::kv_copy(const tensor& cache, const tensor& src, const tensor& dst) {
    checks::kv_copy(cache, src, dst);
    if (!supports(op::kv_copy, cache.type))
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: kv_copy on a " + std::string(dtype_name(cache.type)) + " cache");
    const int64_t k = cache.ne[0], n = src.nelements();
    if (k == 0 || n == 0) return;
    const bool f16 = cache.type == dtype::f16;
    const uint32_t wg = group_size(256);
    const view vc = bind(cache), vs = bind(src), vd = bind(dst);
    const view tmp = scratch(scratch_kv_copy, VkDeviceSize(k) * VkDeviceSize(n) * 4);  // one uint per element
    const uint32_t slots = to_u32(cache.nrows(), "cache rows");
    const uint64_t gathered = per_row(cache.type, k, false) * uint64_t(n);
    const uint64_t scattered = per_row(cache.type, k, true) * uint64_t(n);
    to_u32(int64_t(std::max(gathered, scattered)), "kv_copy");
    run(f16 ? "kv_copy_f16_gather" : "kv_copy_f32_gather", {wg},
        {{vc, false}, {tmp, true}, {vs, false}, {vs, false}, status()},
        kv_push{uint32_t(k), uint32_t(n), slots, vc.elem, 0, vs.elem, vs.elem, k_err_kv_copy, 0},
        grid((gathered + wg - 1) / wg));
    run(f16 ? "kv_copy_f16_scatter" : "kv_copy_f32_scatter", {wg},
        {{vc, true}, {tmp, false}, {vd, false}, {vs, false}, status()},
        kv_push{uint32_t(k), uint32_t(n), slots, vc.elem, 0, vd.elem, vs.elem, k_err_kv_copy, 1},
        grid((scattered + wg - 1) / wg));
}

}  // namespace tandem::vk
