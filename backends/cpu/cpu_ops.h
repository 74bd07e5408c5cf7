// Internal to the cpu backend: the op families implemented outside cpu.cpp, and the rule that decides
// when a loop is worth spreading over the thread pool. Callers have already run checks::<op>().
#pragma once

#include <algorithm>
#include <cstdint>

#include "backends/backend.h"
#include "backends/cpu/thread_pool.h"

namespace tandem::cpu {

// Items per parallel_for chunk so that a chunk touches at least ~32K elements: below that, waking a
// worker costs more than the work it would take over, so small tensors run on the calling thread.
inline int64_t grain(int64_t elements_per_item) {
    constexpr int64_t min_chunk_work = int64_t(1) << 15;
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

// cpu_matmul_kquant.cpp: Q4_K / Q6_K weights read super-block by super-block (activations quantized to Q8_K-like
// blocks of 256 per call). Rows must be whole super-blocks (256 elements).
bool kquant_supported(dtype t);
void matmul_kquant(thread_pool& pool, const tensor& w, const tensor& x, const tensor& out);

// cpu_attention.cpp: fused one-pass attention over the visible slots of each row.
void attention(thread_pool& pool, const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
               const tensor& slots, const attention_params& p, const tensor& out);

}  // namespace tandem::cpu
