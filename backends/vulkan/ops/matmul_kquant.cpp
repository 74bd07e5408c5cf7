// Launcher of matmul with Q4_K / Q6_K weights, read in their packed 256-weight super-blocks (no dequantized copy
// ever exists; shaders/include/kquant.glsl). The paths of ops/matmul_quant.cpp: GPUs take matmul_<q>_f32 (TPR
// invocations per weight row, M <= 8) or the tiled shared-memory shader matmul_<q>_f32_tiled; CPU-like devices take
// matmul_<q>_f32_texel for every M when texel reads work and the activations are 4-element aligned, else
// matmul_<q>_f32_rows. Activation rows go in chunks of 8 plus a remainder, weights too large for one binding in
// chunks of rows, and long K in ranges of whole super-blocks dispatched in order within the device's loop budget,
// each adding to out.
#include <algorithm>
#include <string>
#include <vector>

#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct matmul_push {
    uint32_t k, n, m, w_off, x_off, o_off, k0, k1, accumulate, ldo, m0;  // w_off in bytes
};

constexpr int64_t k_chunk_m = 8;    // the largest MC of the vec and rows shaders
constexpr int64_t k_super_k = 256;  // weights per super-block: the unit of the K ranges
constexpr uint64_t k_unit_k = 64;   // weights per loop iteration of the vec (per lane) and rows shaders
constexpr uint64_t k_slice_k = 32;  // weights per loop iteration of the tiled shader

enum class path { vec, tiled, rows, texel };

}  // namespace

void vk_backend::matmul_kquant(const tensor& w, const tensor& x, const tensor& out) {
    const std::string q = w.type == dtype::q4_k ? "q4_k" : "q6_k";
    const int64_t k = w.ne[0], n = w.nrows(), m = x.nrows();
    if (n == 0 || m == 0) return;
    if (k % k_super_k != 0)
        throw error(TANDEM_ERR_INVALID_ARGUMENT,
                    "vulkan: " + q + " rows of " + std::to_string(k) + " weights (not whole 256-weight super-blocks)");
    // Blocks are decoded from 32-bit words assuming each starts on an even byte (GGUF aligns tensors to 32).
    if (w.offset % 2 != 0) throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: " + q + " weights at an odd byte offset");
    const view vx = bind(x), vo = bind(out);
    to_u32(k * std::max(m, n), "matmul operand");
    to_u32(int64_t(w.row_bytes()) * std::min(n, max_bound_rows(w)), "matmul weight binding");

    const int64_t units = k / int64_t(k_unit_k);
    path kind = cpu_kernels() ? path::rows : m <= k_chunk_m ? path::vec : path::tiled;
    // Texels where the device reads them and both bindings fit its texel-buffer limit (65,536 texels at least).
    const uint64_t w_texels = (uint64_t(w.row_bytes()) * uint64_t(std::min(n, max_bound_rows(w))) + 31) / 16;
    const uint64_t x_texels = (uint64_t(k) * uint64_t(m) + 3) / 4 + 1;
    if (kind == path::rows && texel_reads() && vx.elem % 4 == 0 && w_texels <= limits().max_texel_elements &&
        x_texels <= limits().max_texel_elements)
        kind = path::texel;
    // vec: invocations per weight row, each taking every TPR-th 64-weight unit (K = 256 has 4).
    const uint32_t tpr = units >= 64 ? 32 : units >= 16 ? 16 : units >= 8 ? 8 : 4;
    const uint32_t vec_wg = std::max(group_size(128), tpr);
    // rows/texel: work-group sizes and rows per invocation as for Q8_0 / Q4_0 (ops/matmul_quant.cpp).
    const bool many = m >= k_chunk_m;
    const uint32_t rn = many ? 8 : 4;
    const uint32_t rows_wg = many ? group_size(std::max(limits().subgroup_size, 8u))
                                  : group_size(uint32_t(std::clamp<int64_t>((n + rn - 1) / rn, 8, 64)));
    // tiled: 64 x 64 tiles where 256 invocations and the two 32-deep shared slices fit, else 32 x 32.
    const uint32_t tile = group_size(256) >= 256 && limits().max_shared_bytes >= 2 * k_slice_k * (64 + 1) * 4 ? 64 : 32;
    const uint32_t tiled_wg = (tile / 4) * (tile / 4);
    // K per loop iteration, and per dispatch within the loop budget (whole super-blocks).
    const uint64_t per_iter_k = kind == path::vec ? k_unit_k * tpr : kind == path::tiled ? k_slice_k : k_unit_k;
    const uint64_t budget = loop_budget() > 64 ? loop_budget() - 64 : 1;
    const int64_t k_step = int64_t(
        std::max<uint64_t>(k_super_k, std::min<uint64_t>(uint64_t(k), budget * per_iter_k) / k_super_k * k_super_k));

    const auto parts = activation_chunks(m, k_chunk_m);

    const int64_t chunk = std::min(n, max_bound_rows(w));
    for (int64_t n0 = 0; n0 < n; n0 += chunk) {
        const int64_t nc = std::min(chunk, n - n0);
        const view vw = bind_rows(w, n0, nc);  // vw.elem: the byte offset of row n0 in the binding
        for (int64_t k0 = 0; k0 < std::max<int64_t>(k, 1); k0 += k_step) {  // K = 0 still writes zeros
            const int64_t k1 = std::min(k, k0 + k_step);
            matmul_push pc{uint32_t(k),  uint32_t(nc), uint32_t(m),      vw.elem,     vx.elem, vo.elem + uint32_t(n0),
                           uint32_t(k0), uint32_t(k1), k0 > 0 ? 1u : 0u, uint32_t(n), 0};
            const std::initializer_list<arg> args = {{vw, false}, {vx, false}, {vo, true}};
            if (kind == path::tiled) {
                const groups g{uint32_t((nc + tile - 1) / tile), uint32_t((m + tile - 1) / tile), 1};
                if (g[0] > limits().max_group_count[0] || g[1] > limits().max_group_count[1])
                    throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: matmul too large for one dispatch");
                run(("matmul_" + q + "_f32_tiled").c_str(), {tiled_wg, tile, tile}, args, pc, g);
                continue;
            }
            for (const auto& part : parts) {
                pc.m0 = part.m0;
                if (kind == path::vec) {
                    groups g = grid((uint64_t(nc) + vec_wg / tpr - 1) / (vec_wg / tpr));
                    g[2] = part.chunks;
                    run(("matmul_" + q + "_f32").c_str(), {vec_wg, tpr, part.mc}, args, pc, g);
                    continue;
                }
                const uint64_t invocations = (uint64_t(nc) + rn - 1) / rn;
                groups g = grid((invocations + rows_wg - 1) / rows_wg);
                g[2] = part.chunks;
                if (kind == path::texel) {
                    // Q4_K rows are whole texels: every block starts vw.elem % 16 bytes into one (R0).
                    run(("matmul_" + q + "_f32_texel").c_str(), {rows_wg, rn, part.mc, vw.elem % 16},
                        {texel_words(vw), texel(vx, dtype::f32, 4), {vo, true}}, pc, g);
                } else {
                    run(("matmul_" + q + "_f32_rows").c_str(), {rows_wg, rn, part.mc, 0u}, args, pc, g);
                }
            }
        }
    }
}

}  // namespace tandem::vk
