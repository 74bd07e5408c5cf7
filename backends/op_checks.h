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

// ---- training ops ----
void matmul_t(const tensor& w, const tensor& dy, const tensor& dx);
// Also requires beta to be 0 or 1.
void weight_grad(const tensor& dy, const tensor& x, float beta, const tensor& dw);
void rms_norm_back(const tensor& x, const tensor& w, const tensor& dy, const tensor& dx);
void swiglu_back(const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate, const tensor& d_up);
// Shapes only; the layout in meta (tree fields, slot ranges) is data, checked by the backends.
void attention_back(const tensor& q, const tensor& k, const tensor& v, const tensor& meta, const tensor& out,
                    const tensor& d_out, const tensor& dq, const tensor& dk, const tensor& dv);
// For host backends (meta on the host): every one of the first m rows must be a contiguous run (tree = -1) inside
// [0, n_slots); else TANDEM_ERR_INVALID_ARGUMENT.
void attention_back_rows(const int32_t* meta, int64_t m, int64_t n_slots);
void get_rows_back(const tensor& d_out, const tensor& ids, const tensor& d_table);
void cross_entropy(const tensor& z, const tensor& ids, const tensor& p, const tensor& loss, const tensor& d_logits);
// Also requires step >= 1.
void adamw(const tensor& param, const tensor& grad, const tensor& m, const tensor& v, const adamw_params& p);
void scale(const tensor& x, const tensor& out);
void sum_sq(const tensor& x, const tensor& out);

}  // namespace tandem::checks
