// Shape and type contracts of the backend ops, checked identically by every backend before it runs an op.
// A violation is a caller bug: it throws tandem::error(TANDEM_ERR_INTERNAL) naming the op and the shapes.
#pragma once

#include "backends/backend.h"

namespace tandem::checks {

void get_rows(const tensor& table, const tensor& ids, const tensor& out);
void rms_norm(const tensor& x, const tensor& w, const tensor& out);
void matmul(const tensor& w, const tensor& x, const tensor& out);
void rope(const tensor& x, const tensor& pos, const rope_params& p);
void attention(const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta, const tensor& slots,
               const tensor& out);
void same_f32(const char* op, const tensor& a, const tensor& b, const tensor& out);
void softmax(const tensor& x, const tensor& out);
void kv_write(const tensor& src, const tensor& cache, const tensor& slots);
void kv_copy(const tensor& cache, const tensor& src, const tensor& dst);
void argmax(const tensor& x, const tensor& out);
// Also rejects k outside [1, min(K, top_k_max)], with TANDEM_ERR_INVALID_ARGUMENT (k may come from a user's
// sampling settings rather than from a caller bug).
void top_k(const tensor& x, int32_t k, const tensor& out_ids, const tensor& out_vals);

}  // namespace tandem::checks
