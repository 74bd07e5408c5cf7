// attention_back launcher (kernels/train_attention.cl): kernel 1 per (q head, query row) writes dq and each row's
// (logsumexp, d_out . out) into the scratch buffer; kernel 2 per (kv head, slot) reads them and writes dk and dv.
// The in-order queue orders the two. meta's layout (tree walks, runs outside k/v) is data on the device: the kernels
// report it through the error word, so it surfaces at the next synchronize()/download().
#include "backends/op_checks.h"
#include "backends/opencl/opencl_backend.h"
#include "engine/error.h"

namespace tandem::opencl {

void opencl_backend::attention_back(const tensor& q, const tensor& k, const tensor& v, const tensor& meta,
                                    const tensor& out, const tensor& d_out, const attention_params& p, const tensor& dq,
                                    const tensor& dk, const tensor& dv) {
    checks::attention_back(q, k, v, meta, out, d_out, dq, dk, dv);
    const int64_t d = q.ne[0], hq = q.ne[1], m = q.ne[2], hkv = k.ne[0] / d, s = k.nrows();
    // Private vectors of HEAD_DIM floats per work-item (4 in kernel 2), as the forward attention's bound.
    if (d > 512)
        throw error(TANDEM_ERR_UNSUPPORTED, "opencl: attention_back head size " + std::to_string(d) + " > 512");
    const std::string defines = "-DHEAD_DIM=" + std::to_string(d);
    const cl_int c_hq = dim(hq, "attention_back"), c_hkv = dim(hkv, "attention_back"), c_m = dim(m, "attention_back"),
                 c_s = dim(s, "attention_back");
    cl_mem stats = scratch(size_t(2 * hq * m) * sizeof(float));

    cl_kernel k1 = kernel("train_attention.cl", "attention_back_dq_f32", defines);
    set_args(k1, arg(q), arg(k), arg(v), arg(meta), arg(out), arg(d_out), arg(dq), stats, c_hq, c_hkv, c_m, c_s,
             p.scale, error_word());
    const size_t global1[2] = {size_t(hq), size_t(m)}, local1[2] = {0, 0};
    launch(k1, "attention_back_dq_f32", 2, global1, local1);

    cl_kernel k2 = kernel("train_attention.cl", "attention_back_dkv_f32", defines);
    set_args(k2, arg(q), arg(k), arg(v), arg(meta), arg(d_out), stats, arg(dk), arg(dv), c_hq, c_hkv, c_m, c_s,
             p.scale);
    const size_t global2[2] = {size_t(hkv), size_t(s)}, local2[2] = {0, 0};
    launch(k2, "attention_back_dkv_f32", 2, global2, local2);
}

}  // namespace tandem::opencl
