// Case builders shared between the op-family files, the harness self-test and the perf cases (gtest-free).
#pragma once

#include "tests/backend_ops/op_case.h"

namespace tandem::test {

// x f32 {K, M} times w {K, N} (f32 or f16) into out f32 {N, M}.
op_case matmul_case(rng& r, const arg& w, int64_t m);
// c with its weight (argument 0) declared constant through backend::prepare_weight before the op, as a model's
// weights are; " prepared" is appended to the description.
op_case prepared(op_case c);

// Uniform [-1, 1] values quantized to t (a type quantize_row produces: q8_0, q4_0, q4_k, q6_k).
arg quantized_arg(rng& r, dtype t, std::array<int64_t, 4> ne);
// `values` (ne[0] * ne[1] * ne[2] * ne[3] of them) quantized row by row to t.
arg quantized_arg(dtype t, std::array<int64_t, 4> ne, const std::vector<float>& values);

// The layout of one attention call: meta {kv_begin, kv_len, tree, parent} and slots for the M query rows,
// then for T - M walk-only entries (tokens already in the cache that a tree walk passes through).
struct attention_rows {
    std::vector<int32_t> meta;        // 4 per query row
    std::vector<int32_t> slots;       // 1 per query row
    std::vector<int32_t> walk_meta;   // 4 per walk-only entry
    std::vector<int32_t> walk_slots;  // 1 per walk-only entry
    int64_t size() const { return int64_t(slots.size()); }  // M
    // In tree/parent fields, walk-only entry w is written as walk_ref(w) until table() resolves it to M + w.
    static int64_t walk_ref(int64_t w) { return -2 - w; }
    void push_meta(int64_t kv_begin, int64_t kv_len, int64_t tree, int64_t parent);
    // A causal chain of n_new tokens appended to a session stored at [base, base + committed).
    void add_chain(int64_t base, int64_t committed, int64_t n_new);
    // A random token tree of n_nodes (depth <= max_depth) on top of a committed prefix; many_roots allows
    // several root nodes. Nodes occupy slots base + committed + i.
    void add_tree(rng& r, int64_t base, int64_t committed, int64_t n_nodes, int64_t max_depth, bool many_roots);
    // The same, evaluated in two passes: the first n_old nodes are walk-only entries (already in the cache),
    // the other n_new are query rows. Walk-only kv fields hold junk: they must be ignored.
    void add_tree_second_pass(rng& r, int64_t base, int64_t committed, int64_t n_old, int64_t n_new,
                              int64_t max_depth);
    // The final meta {4, T} and slots {T}.
    std::vector<int32_t> table_meta() const;
    std::vector<int32_t> table_slots() const;
};

struct attention_shape {
    int64_t d = 64, hq = 4, hkv = 4, n_slots = 128;
    dtype cache = dtype::f32;
    float q_scale = 1.f;  // magnitude of q (larger: sharper softmax)
};

op_case attention_case(rng& r, const std::string& variant, const attention_shape& s, const attention_rows& rows);

}  // namespace tandem::test
