// Internal to the cpu backend: the op families implemented outside cpu.cpp, and the rule that decides
// when a loop is worth spreading over the thread pool. Callers have already run checks::<op>().
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/host_buffer.h"
#include "backends/cpu/thread_pool.h"

namespace tandem::cpu {

// Items per parallel_for chunk so that a chunk touches at least min_chunk_work elements (~32K by default): below
// that, waking a worker costs more than the work it would take over, so small tensors run on the calling thread.
inline int64_t grain(int64_t elements_per_item, int64_t min_chunk_work = int64_t(1) << 15) {
    return std::max<int64_t>(1, min_chunk_work / std::max<int64_t>(1, elements_per_item));
}

// cpu_matmul.cpp: f32 weights through OpenBLAS (or our GEMV for one row), f16 weights through our kernel.
void matmul(thread_pool& pool, const tensor& w, const tensor& x, const tensor& out);
// Sets OpenBLAS's (process-wide) thread count.
void set_blas_threads(int n);

// cpu_matmul_quant.cpp: Q8_0 / Q4_0 weights read block by block (activations quantized to Q8 per call);
// quant_supported and matmul_quant also cover the K-quants, handed on to matmul_kquant.
bool quant_supported(dtype t);
void matmul_quant(thread_pool& pool, const tensor& w, const tensor& x, const tensor& out);
// out[m] = table[ids[m]] dequantized; ids already checked against the table.
void get_rows_quant(thread_pool& pool, const tensor& table, const int32_t* ids, const tensor& out);

// cpu_matmul_packed.cpp: Q8_0 / Q4_0 weights with rows interleaved in groups of 16 for the AVX512-VNNI path
// (backend::prepare_weight). pack_quant: the layout, or nullptr where w's type or the chosen path has none.
// matmul_packed: outs[i] = x ws[i]^T through such layouts, x quantized once for all of them; false (nothing done)
// unless every layout is one and they share the row length and the type.
std::shared_ptr<const derived_layout> pack_quant(thread_pool& pool, host_arena& arena, const tensor& w);
bool matmul_packed(thread_pool& pool, std::span<const derived_layout* const> ls, const tensor& x,
                   std::span<const tensor> outs);

// cpu_matmul_kquant.cpp: Q4_K / Q6_K weights read super-block by super-block (activations quantized to Q8_K-like
// blocks of 256 per call). Rows must be whole super-blocks (256 elements).
bool kquant_supported(dtype t);
void matmul_kquant(thread_pool& pool, const tensor& w, const tensor& x, const tensor& out);

// cpu_attention.cpp: fused one-pass attention over the visible slots of each row.
void attention(thread_pool& pool, const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
               const tensor& slots, const attention_params& p, const tensor& out);

// cpu_attention_block.cpp: query rows that read one contiguous key run from its start, grouped by that start:
// prefill chunks and training batches (no tree walk), and the rows of a token tree under verification, which see
// their session's prefix plus the nodes on their walk, stored just past it. Each row sees the slots
// [begin, begin + runs[i]) and begin + tree offsets; lens[i] is its window (one past the last slot it sees) and rows
// are in increasing window; len is the longest window. Without tree walks runs is empty (runs == lens).
struct run_group {
    int64_t begin = 0, len = 0;
    std::vector<int64_t> rows, lens;
    std::vector<int64_t> runs;
    std::vector<int32_t> tree;     // row i's tree offsets (increasing, all in [runs[i], lens[i])): tree[tree_at[i],
    std::vector<int64_t> tree_at;  // tree_at[i + 1]); both empty without tree walks
};
// The groups of at least min_rows such rows without a tree walk, leaving out runs too long for the tiled kernels
// (head size d). meta {4, m_rows} already validated.
std::vector<run_group> group_runs(const int32_t* meta, int64_t m_rows, int64_t min_rows, int64_t d);
// The same for rows with or without a tree walk: row m's walk slots are tree[tree_begin[m], tree_begin[m + 1])
// (meta and walks already validated). A row joins when its walk slots are distinct, past its run and at most
// max(run, 256) slots beyond it, so that its window stays about what it sees; other rows are left out.
std::vector<run_group> group_windows(const int32_t* meta, int64_t m_rows, const int32_t* tree,
                                     const int64_t* tree_begin, int64_t min_rows, int64_t d);
// attention() for the rows of `groups` only (other rows of out are left alone).
void attention_grouped(thread_pool& pool, const tensor& q, const tensor& k_cache, const tensor& v_cache,
                       const std::vector<run_group>& groups, float scale, const tensor& out);
// attention_back() when every row that sees a slot belongs to a group and the groups' slot ranges are disjoint;
// returns false without writing anything otherwise. meta already validated.
bool attention_back_grouped(thread_pool& pool, const tensor& q, const tensor& k, const tensor& v, const tensor& meta,
                            const tensor& out, const tensor& d_out, float scale, const tensor& dq, const tensor& dk,
                            const tensor& dv);

// cpu_train.cpp: the training ops (backward passes, loss, optimizer). Callers have run checks::<op>(); ids and the
// attention layout are checked here (TANDEM_ERR_INVALID_ARGUMENT). f32 matmul_t / weight_grad use OpenBLAS.
bool matmul_t_supported(dtype t);
void matmul_t(thread_pool& pool, const tensor& w, const tensor& dy, const tensor& dx);
void weight_grad(const tensor& dy, const tensor& x, float alpha, float beta, const tensor& dw);
void rms_norm_back(thread_pool& pool, const tensor& x, const tensor& w, const tensor& dy, float eps, const tensor& dx);
void swiglu_back(thread_pool& pool, const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate,
                 const tensor& d_up);
void attention_back(thread_pool& pool, const tensor& q, const tensor& k, const tensor& v, const tensor& meta,
                    const tensor& out, const tensor& d_out, const attention_params& p, const tensor& dq,
                    const tensor& dk, const tensor& dv);
void get_rows_back(thread_pool& pool, const tensor& d_out, const tensor& ids, const tensor& d_table);
void cross_entropy(thread_pool& pool, const tensor& z, const tensor& ids, const tensor& p, float grad_scale,
                   const tensor& loss, const tensor& d_logits);
void adamw(thread_pool& pool, const tensor& param, const tensor& grad, const tensor& m, const tensor& v,
           const adamw_params& p);
void scale(thread_pool& pool, const tensor& x, float s, const tensor& out);
void sum_sq(thread_pool& pool, const tensor& x, const tensor& out);

}  // namespace tandem::cpu
