// Launchers of the two backward passes of matmul: matmul_t (dx = w^T dy, the frozen weight read in its own format:
// f32, f16, Q8_0, Q4_0, Q4_K, Q6_K) and weight_grad (dw = beta dw + alpha dy^T x). Both shaders keep a register tile
// per invocation and loop over the reduced dimension (N for matmul_t, M for weight_grad); on loop-limited devices
// (lavapipe) that dimension goes in ranges dispatched in order, each adding to the output, so no invocation runs
// past the loop budget. Activation rows of matmul_t go in chunks of 8 (work-group z), as in ops/matmul.cpp.
#include <algorithm>
#include <string>

#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct matmul_t_push {
    uint32_t k, n, w_off, dy_off, dx_off, n_base, n0, n1, accumulate, m0;
};

struct weight_grad_push {
    uint32_t k, n, dy_off, x_off, dw_off, m0, m1;
    float alpha, beta;
};

constexpr int64_t k_chunk_m = 8;               // the largest MC of train_matmul_t.comp
constexpr uint32_t k_cols = 8;                 // dx columns per invocation of train_matmul_t.comp
constexpr int64_t k_tile_n = 4, k_tile_k = 8;  // TN, TK of train_weight_grad.comp

}  // namespace

void vk_backend::matmul_t(const tensor& w, const tensor& dy, const tensor& dx) {
    checks::matmul_t(w, dy, dx);
    if (!supports(op::matmul_t, w.type))
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: matmul_t with " + std::string(dtype_name(w.type)) + " weights");
    const int64_t k = w.ne[0], n = w.nrows(), m = dy.nrows();
    if (k == 0 || m == 0) return;
    const bool kquant = w.type == dtype::q4_k || w.type == dtype::q6_k;
    const bool quant = kquant || w.type == dtype::q8_0 || w.type == dtype::q4_0;
    if (quant && k % (kquant ? 256 : 32) != 0)
        throw error(TANDEM_ERR_INTERNAL, "vulkan: matmul_t: " + std::string(dtype_name(w.type)) + " rows of " +
                                             std::to_string(k) + " weights");
    // Blocks are decoded from 32-bit words assuming each starts on an even byte (GGUF aligns tensors to 32).
    if (quant && w.offset % 2 != 0)
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: matmul_t with quantized weights at an odd byte offset");
    const std::string variant = "matmul_t_" + std::string(dtype_name(w.type)) + "_f32";
    const view vy = bind(dy), vx = bind(dx);
    to_u32(k * m, "matmul_t dx");
    to_u32(n * m, "matmul_t dy");

    const uint64_t invocations = (uint64_t(k) + k_cols - 1) / k_cols;
    const uint32_t wg = group_size(uint32_t(std::clamp<uint64_t>(invocations, 8, 64)));
    const auto parts = activation_chunks(m, k_chunk_m);
    // One loop iteration per weight row (the MC x 8 products inside are unrolled).
    const int64_t n_step = int64_t(loop_budget() > 64 ? loop_budget() - 64 : 1);
    const int64_t chunk = std::max<int64_t>(1, std::min(n, max_bound_rows(w)));
    // N = 0 still writes zeros: one empty range.
    for (int64_t nb = 0; nb < std::max<int64_t>(n, 1); nb += chunk) {
        const int64_t nc = std::min(chunk, n - nb);
        const view vw = bind_rows(w, nb, nc);
        to_u32(int64_t(w.row_bytes()) * nc, "matmul_t weight binding");
        for (int64_t n0 = 0; n0 < std::max<int64_t>(nc, 1); n0 += n_step) {
            matmul_t_push pc{uint32_t(k),
                             uint32_t(n),
                             vw.elem,
                             vy.elem,
                             vx.elem,
                             uint32_t(nb),
                             uint32_t(n0),
                             uint32_t(std::min(nc, n0 + n_step)),
                             nb > 0 || n0 > 0 ? 1u : 0u,
                             0};
            for (const auto& part : parts) {
                pc.m0 = part.m0;
                groups g = grid((invocations + wg - 1) / wg);
                g[2] = part.chunks;
                run(variant.c_str(), {wg, part.mc}, {{vw, false}, {vy, false}, {vx, true}}, pc, g);
            }
        }
    }
}

void vk_backend::weight_grad(const tensor& dy, const tensor& x, float alpha, float beta, const tensor& dw) {
    checks::weight_grad(dy, x, beta, dw);
    const int64_t k = x.ne[0], n = dy.ne[0], m = x.nrows();
    if (k == 0 || n == 0) return;
    const view vy = bind(dy), vx = bind(x), vw = bind(dw);
    to_u32(k * std::max(m, n), "weight_grad operand");
    to_u32(n * m, "weight_grad dy");
    const uint64_t tiles = uint64_t((n + k_tile_n - 1) / k_tile_n) * uint64_t((k + k_tile_k - 1) / k_tile_k);
    const uint32_t wg = group_size(uint32_t(std::clamp<uint64_t>(tiles, 8, 64)));
    const groups g = grid((tiles + wg - 1) / wg);
    // One loop iteration per activation row; M = 0 still applies beta (one empty range).
    const int64_t m_step = int64_t(loop_budget() > 64 ? loop_budget() - 64 : 1);
    for (int64_t m0 = 0; m0 < std::max<int64_t>(m, 1); m0 += m_step) {
        const weight_grad_push pc{uint32_t(k),
                                  uint32_t(n),
                                  vy.elem,
                                  vx.elem,
                                  vw.elem,
                                  uint32_t(m0),
                                  uint32_t(std::min(m, m0 + m_step)),
                                  alpha,
                                  m0 == 0 ? beta : 1.f};
        run("weight_grad_f32_f32", {wg}, {{vy, false}, {vx, false}, {vw, true}}, pc, g);
    }
}

}  // namespace tandem::vk
