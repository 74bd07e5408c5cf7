// Launcher of matmul: out[m][n] = sum_k w[n][k] x[m][k] for f32/f16 weights. GPUs: few activation rows
// (decode) take the matrix-vector shader (matmul_<w>_f32: TPR invocations per weight row, weights read once
// for all rows) and more rows the tiled shared-memory shader (matmul_<w>_f32_tiled). CPU-like devices:
// matmul_<w>_f32_rows, RN weight rows per invocation and no barriers, for every M. The activation rows go
// in chunks of 8 (a specialization constant) plus one dispatch for the remainder. Weights larger than one
// binding may hold go in chunks of rows, and on loop-limited devices (lavapipe) long K is cut into ranges
// dispatched in order, each adding to out. Q8_0 / Q4_0 weights: ops/matmul_quant.cpp, Q4_K / Q6_K weights:
// ops/matmul_kquant.cpp.
#include <algorithm>
#include <vector>

#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct matmul_push {
    uint32_t k, n, m, w_off, x_off, o_off, k0, k1, accumulate, ldo, m0;
};

constexpr int64_t k_chunk_m = 8;   // the largest MC of matmul_vec.comp / matmul_rows.comp
constexpr uint32_t k_tile_k = 16;  // BK of matmul_mat.comp

enum class path { vec, tiled, rows };

}  // namespace

void vk_backend::matmul(const tensor& w, const tensor& x, const tensor& out) {
    checks::matmul(w, x, out);
    if (w.type == dtype::q8_0 || w.type == dtype::q4_0) return matmul_quant(w, x, out);
    if (w.type == dtype::q4_k || w.type == dtype::q6_k) return matmul_kquant(w, x, out);
    if (!supports(op::matmul, w.type))
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: matmul with " + std::string(dtype_name(w.type)) + " weights");
    const int64_t k = w.ne[0], n = w.nrows(), m = x.nrows();
    if (n == 0 || m == 0) return;
    const bool f16 = w.type == dtype::f16;
    const view vx = bind(x), vo = bind(out);
    to_u32(k * std::max<int64_t>(m, n), "matmul operand");

    const path kind = cpu_kernels() ? path::rows : m <= k_chunk_m ? path::vec : path::tiled;
    const uint32_t tpr = k >= 1024 ? 32 : k >= 256 ? 16 : 8;  // vec: invocations per weight row
    const uint32_t vec_wg = std::max(group_size(128), tpr);
    // rows: RN weight rows per invocation. Measured on lavapipe: with many activation-row chunks, 8 rows and
    // one SIMD group per work-group (fewer loads per product, many small work-groups); for a decode step 4 rows
    // and up to 64 invocations per work-group (more invocations to spread over the cores).
    const bool many = m >= k_chunk_m;
    const uint32_t rn = many ? 8 : 4;
    const uint32_t rows_wg = many ? group_size(std::max(limits().subgroup_size, 8u))
                                  : group_size(uint32_t(std::clamp<int64_t>((n + rn - 1) / rn, 8, 64)));
    const uint32_t tile = group_size(256) >= 256 ? 64 : 32;
    const uint32_t tiled_wg = (tile / 4) * (tile / 4);
    // rows: through 4-wide texel fetches when K and both operands are 4-element aligned.
    // K per dispatch: loop iterations per invocation = K / TPR (vec f32), K / 2 TPR (vec f16), K / BK (tiled),
    // K / 4 (texel), K (rows; the unaligned f16 loop too). Inner loops have constant trip counts and are unrolled.
    const uint32_t w_lanes = f16 ? 8 : 4;  // weights per texel: RGBA32UI of halves, or RGBA32F
    const bool use_texels = kind == path::rows && texel_reads() && k % w_lanes == 0 && vx.elem % 4 == 0;
    const uint64_t per_iter_k = kind == path::vec     ? (f16 ? 2 * tpr : tpr)
                                : kind == path::tiled ? k_tile_k
                                : use_texels          ? w_lanes
                                                      : 1;
    const uint64_t budget = loop_budget() > 64 ? loop_budget() - 64 : 1;
    const int64_t k_step = int64_t(std::min<uint64_t>(uint64_t(std::max<int64_t>(k, 1)), budget * per_iter_k / 8 * 8));

    // Activation-row chunks of the vec and rows shaders: m / 8 chunks of 8 rows, then one of m % 8 rows.
    const auto parts = activation_chunks(m, k_chunk_m);

    const int64_t chunk = std::min(n, max_bound_rows(w));
    for (int64_t n0 = 0; n0 < n; n0 += chunk) {
        const int64_t nc = std::min(chunk, n - n0);
        const view vw = bind_rows(w, n0, nc);
        for (int64_t k0 = 0; k0 < std::max<int64_t>(k, 1); k0 += k_step) {
            const int64_t k1 = std::min(k, k0 + k_step);
            matmul_push pc{uint32_t(k),  uint32_t(nc), uint32_t(m),      vw.elem,     vx.elem, vo.elem + uint32_t(n0),
                           uint32_t(k0), uint32_t(k1), k0 > 0 ? 1u : 0u, uint32_t(n), 0};
            const std::initializer_list<arg> args = {{vw, false}, {vx, false}, {vo, true}};
            if (kind == path::tiled) {
                const groups g{uint32_t((nc + tile - 1) / tile), uint32_t((m + tile - 1) / tile), 1};
                if (g[0] > limits().max_group_count[0] || g[1] > limits().max_group_count[1])
                    throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: matmul too large for one dispatch");
                run(f16 ? "matmul_f16_f32_tiled" : "matmul_f32_f32_tiled", {tiled_wg, tile, tile}, args, pc, g);
                continue;
            }
            for (const auto& part : parts) {
                pc.m0 = part.m0;
                if (kind == path::vec) {
                    groups g = grid((uint64_t(nc) + vec_wg / tpr - 1) / (vec_wg / tpr));
                    g[2] = part.chunks;
                    run(f16 ? "matmul_f16_f32" : "matmul_f32_f32", {vec_wg, tpr, part.mc}, args, pc, g);
                } else {
                    const uint64_t invocations = (uint64_t(nc) + rn - 1) / rn;
                    groups g = grid((invocations + rows_wg - 1) / rows_wg);
                    g[2] = part.chunks;
                    if (use_texels && vw.elem % w_lanes == 0) {
                        run(f16 ? "matmul_f16_f32_texel" : "matmul_f32_f32_texel", {rows_wg, rn, part.mc},
                            {texel(vw, w.type, w_lanes), texel(vx, dtype::f32, 4), {vo, true}}, pc, g);
                    } else {
                        run(f16 ? "matmul_f16_f32_rows" : "matmul_f32_f32_rows", {rows_wg, rn, part.mc}, args, pc, g);
                    }
                }
            }
        }
    }
}

}  // namespace tandem::vk
