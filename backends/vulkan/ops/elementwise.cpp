// Launchers of the element-wise family: get_rows (f32/f16/Q8_0/Q4_0/Q4_K/Q6_K table; quantized rows decoded in
// place), add and swiglu. One element per invocation, so no shader loop and nothing for lavapipe's loop limit to count.
#include "backends/op_checks.h"
#include "backends/vulkan/backend_impl.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

struct get_rows_push {
    uint32_t k, m, rows, row0, n_rows, t_off, i_off, o_off, check;
};

struct binary_push {
    uint32_t n, a_off, b_off, o_off;
};

}  // namespace

void vk_backend::get_rows(const tensor& table, const tensor& ids, const tensor& out) {
    checks::get_rows(table, ids, out);
    if (!supports(op::get_rows, table.type))
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: get_rows on a " + std::string(dtype_name(table.type)) + " table");
    const int64_t k = table.ne[0], rows = table.nrows(), m = ids.nelements();
    if (k == 0 || m == 0) return;
    const bool quant = table.type == dtype::q8_0 || table.type == dtype::q4_0 || table.type == dtype::q4_k ||
                       table.type == dtype::q6_k;
    // Blocks are decoded from 32-bit words assuming each starts on an even byte (GGUF aligns tensors to 32).
    if (quant && table.offset % 2 != 0)
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: get_rows on a quantized table at an odd byte offset");
    const char* variant = table.type == dtype::q8_0   ? "get_rows_q8_0_f32"
                          : table.type == dtype::q4_0 ? "get_rows_q4_0_f32"
                          : table.type == dtype::q4_k ? "get_rows_q4_k_f32"
                          : table.type == dtype::q6_k ? "get_rows_q6_k_f32"
                          : table.type == dtype::f16  ? "get_rows_f16_f32"
                                                      : "get_rows_f32_f32";
    const uint32_t wg = group_size(256);
    const view vi = bind(ids), vo = bind(out);
    const uint64_t n = uint64_t(k) * uint64_t(m);
    to_u32(int64_t(n), "get_rows output");
    // A table larger than one binding may hold goes in chunks of rows; each dispatch copies its own ids.
    const int64_t chunk = std::max<int64_t>(1, std::min(rows, max_bound_rows(table)));
    for (int64_t row0 = 0; row0 < std::max<int64_t>(rows, 1); row0 += chunk) {
        const int64_t n_rows = std::min(chunk, rows - row0);
        const view vt = n_rows > 0 ? bind_rows(table, row0, n_rows) : bind_rows(table, 0, 0);
        const get_rows_push pc{uint32_t(k),    uint32_t(m),      to_u32(rows, "table"),
                               uint32_t(row0), uint32_t(n_rows), vt.elem,
                               vi.elem,        vo.elem,          row0 == 0 ? 1u : 0u};
        run(variant, {wg}, {{vt, false}, {vi, false}, {vo, true}, status()}, pc, grid((n + wg - 1) / wg));
        if (rows == 0) break;
    }
}

void vk_backend::add(const tensor& a, const tensor& b, const tensor& out) {
    checks::same_f32("add", a, b, out);
    const int64_t n = a.nelements();
    if (n == 0) return;
    const uint32_t wg = group_size(256);
    const view va = bind(a), vb = bind(b), vo = bind(out);
    run("add_f32_f32", {wg}, {{va, false}, {vb, false}, {vo, true}},
        binary_push{to_u32(n, "add"), va.elem, vb.elem, vo.elem}, grid((uint64_t(n) + wg - 1) / wg));
}

void vk_backend::swiglu(const tensor& gate, const tensor& up, const tensor& out) {
    checks::same_f32("swiglu", gate, up, out);
    const int64_t n = gate.nelements();
    if (n == 0) return;
    const uint32_t wg = group_size(256);
    const view vg = bind(gate), vu = bind(up), vo = bind(out);
    run("swiglu_f32_f32", {wg}, {{vg, false}, {vu, false}, {vo, true}},
        binary_push{to_u32(n, "swiglu"), vg.elem, vu.elem, vo.elem}, grid((uint64_t(n) + wg - 1) / wg));
}

}  // namespace tandem::vk
