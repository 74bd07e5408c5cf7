// The one backend interface: memory (buffers), transfers, and the ops of a llama-family forward pass.
// Every backend (cpu_ref, cpu, opencl, vulkan) implements it; the forward pass is written once against it.
// Ops are enqueued in call order and may run asynchronously; download() and synchronize() wait.
// Shapes use ggml order: ne[0] is the innermost (contiguous) dimension, so a matrix of N rows of K
// elements is ne = {K, N}. All tensors are contiguous. Backends throw tandem::error on failure: a shape or
// type contract broken by the caller is TANDEM_ERR_INTERNAL, an out-of-range id or slot in the data
// TANDEM_ERR_INVALID_ARGUMENT (device backends may report it at the next synchronize()/download()).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "engine/types.h"

namespace tandem {

struct tensor;

// A layout a backend derived from a constant weight (backend::prepare_weight), e.g. its rows interleaved for the
// device's dot-product instructions. Subclassed privately by each backend; owned by the weight's buffer.
struct derived_layout {
    virtual ~derived_layout() = default;
};

// Device memory owned by one backend.
class buffer {
   public:
    virtual ~buffer() = default;
    virtual size_t size() const = 0;
    // Host address of the memory when the host can address it directly (CPU backends); else nullptr.
    virtual void* host_ptr() { return nullptr; }

    // Derived layouts of tensors in this buffer, found by the tensor's offset, type and shape (thread-safe).
    void attach_layout(const tensor& t, std::shared_ptr<const derived_layout> l);
    std::shared_ptr<const derived_layout> layout(const tensor& t) const;
    // Forgets the layouts of tensors overlapping [offset, offset + bytes): every backend's upload calls it, so a
    // layout never outlives the bytes it was derived from.
    void drop_layouts(size_t offset, size_t bytes);

   private:
    struct layout_entry {
        size_t bytes;
        dtype type;
        std::array<int64_t, 4> ne;
        std::shared_ptr<const derived_layout> layout;
    };
    mutable std::shared_mutex layouts_mu_;
    std::multimap<size_t, layout_entry> layouts_;  // by offset
};

// A typed, contiguous view into a buffer. Does not own memory.
struct tensor {
    buffer* buf = nullptr;
    size_t offset = 0;  // bytes from the start of buf
    dtype type = dtype::f32;
    std::array<int64_t, 4> ne{1, 1, 1, 1};

    int64_t nelements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
    int64_t nrows() const { return ne[1] * ne[2] * ne[3]; }
    size_t row_bytes() const { return dtype_row_bytes(type, ne[0]); }
    size_t nbytes() const { return row_bytes() * size_t(nrows()); }
    // Host pointer to the first element; only valid on host-addressable buffers.
    template <typename T>
    T* host() const {
        return reinterpret_cast<T*>(static_cast<char*>(buf->host_ptr()) + offset);
    }
    // The view of rows [first, first + count) of a tensor seen as ne[0] x nrows.
    tensor rows(int64_t first, int64_t count) const;
};

enum class op {
    get_rows, rms_norm, matmul, rope, attention, swiglu, add, softmax, kv_write, kv_copy, argmax, top_k,
    // training: backward passes, loss and optimizer (see the "training" section of backend)
    matmul_t, weight_grad, rms_norm_back, attention_back, swiglu_back, get_rows_back, cross_entropy, adamw, scale,
    sum_sq,
};
// The ops of the training section (backward passes, loss, optimizer).
inline bool is_training_op(op o) { return o >= op::matmul_t; }
// Every op, in enum order (for support matrices and benchmarks).
const std::vector<op>& all_ops();
const char* op_name(op o);

// The largest k backend::top_k accepts (one selection list per row fits in registers / private memory).
constexpr int32_t top_k_max = 64;

struct rope_params {
    int32_t n_rot = 0;          // rotated dimensions per head (pairs (2i, 2i+1), i < n_rot/2); rest pass through
    float freq_base = 10000.f;  // theta_i = pos * freq_base^(-2i / n_rot)
};

// Per-row attention layout: what each query row of a batch may attend to. This one description
// covers causal prefill/decode, token trees and ragged batches of several sessions:
//   meta[m] = {kv_begin, kv_len, tree, parent} (int32, tensor ne = {4, M})
//   row m attends to cache slots [kv_begin, kv_begin + kv_len) and then, walking the tree from batch
//   row `tree` (usually m itself, -1 for none) through `parent` links (batch row indices, -1 at the root
//   of the new tokens), to the slots slots[j] of every row j on that walk.
// A row that sees no slot at all gets zeros. Tree-walk slots must be disjoint from the row's contiguous run
// (a slot seen twice counts twice). Causal chains use kv_len = pos + 1 and tree = -1 (their tokens are contiguous in the cache); tree
// nodes use kv_len = committed prefix and tree = m. meta and slots may have T >= M entries: entries M..T-1
// are walk-only (tokens already in the cache, e.g. ancestors evaluated in an earlier pass; their kv fields
// are ignored). Walk indices are < T; a walk longer than T steps is a cycle (kernels bound it); out-of-range
// slots are an error (host backends throw; device kernels skip them).
struct attention_params {
    float scale = 1.f;  // multiplies q.k before the softmax, usually 1/sqrt(head_dim)
};

// One AdamW step (decoupled weight decay, as PyTorch's AdamW), element-wise over a parameter tensor:
//   g = grad * grad_scale
//   param -= lr * weight_decay * param
//   m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
//   param -= lr * (m / bc1) / (sqrt(v / bc2) + eps)   with bc1 = 1 - beta1^step, bc2 = 1 - beta2^step
// grad_scale carries global-norm gradient clipping (min(1, max_norm / norm), norm from sum_sq) and averaging.
struct adamw_params {
    float lr = 1e-3f;
    float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
    float weight_decay = 0.f;
    float grad_scale = 1.f;
    int32_t step = 1;  // 1-based
};
// bc1 and bc2 of adamw_params, computed on the host in double precision; every backend passes these to its kernel.
struct adamw_corrections {
    float bc1, bc2;
};
adamw_corrections adamw_bias_corrections(const adamw_params& p);

class backend {
   public:
    virtual ~backend() = default;

    // ---- identity and capabilities ----
    virtual std::string name() const = 0;
    // One line on what this instance runs on and which kernel variants it chose (device, driver, threads,
    // instruction-set paths), for benchmark records: starts with name().
    virtual std::string describe() const { return name(); }
    // True when this backend can run `o` with weights/cache of type `t`. The single source of truth for
    // placement and for the test harness's support matrix.
    virtual bool supports(op o, dtype t) const = 0;
    // Worker threads for host-side loops; default: ignored.
    virtual void set_threads(int n) { (void)n; }

    // ---- memory ----
    virtual std::unique_ptr<buffer> alloc(size_t bytes) = 0;
    // A buffer holding a copy of (or, on host-addressable backends, a zero-copy view of) host memory that
    // stays valid and unchanged for the buffer's life. Default: alloc + upload.
    virtual std::unique_ptr<buffer> wrap_host(const void* data, size_t bytes);
    // Ordered after every op already enqueued (an op enqueued earlier sees the old contents); blocking.
    virtual void upload(buffer& dst, size_t offset, const void* src, size_t bytes) = 0;
    // Waits for every enqueued op, then copies.
    virtual void download(const buffer& src, size_t offset, void* dst, size_t bytes) = 0;
    virtual void synchronize() {}

    // ---- constant weights ----
    // Declares w (a matmul weight) constant for as long as its buffer lives, so that the backend may derive a
    // faster layout of it, kept with the buffer (the cpu backend interleaves Q8_0/Q4_0 rows in groups of 16 for
    // its int8 dot products). w's own bytes stay valid and unchanged, and other ops (get_rows, matmul_t) go on
    // reading them. Returns true when matmul will no longer read w's own bytes (the caller may let the OS drop
    // those pages). Default: nothing to derive.
    virtual bool prepare_weight(const tensor& w) {
        (void)w;
        return false;
    }

    // ---- ops (out never aliases an input unless stated) ----
    // out[m] = table[ids[m]] converted to f32. table {K, R} f32/f16/quant; ids i32 {M}; out f32 {K, M}.
    virtual void get_rows(const tensor& table, const tensor& ids, const tensor& out) = 0;
    // out[m] = x[m] / sqrt(mean(x[m]^2) + eps) * w. x, out f32 {K, M} (out may alias x); w f32 {K}.
    virtual void rms_norm(const tensor& x, const tensor& w, float eps, const tensor& out) = 0;
    // out[m][n] = sum_k w[n][k] * x[m][k]. w {K, N} f32/f16/quant; x f32 {K, M}; out f32 {N, M}.
    virtual void matmul(const tensor& w, const tensor& x, const tensor& out) = 0;
    // matmul(ws[i], x, outs[i]) for every i: several weights applied to one activation (a layer's Q, K and V
    // projections, or its gate and up projections), so that a backend can share the activations' preparation and
    // keep the memory streaming across the weights in one dispatch. The outs are disjoint from x and from each
    // other. Default: one matmul after the other.
    virtual void matmul_multi(std::span<const tensor> ws, const tensor& x, std::span<const tensor> outs);
    // In place rotary embedding of x f32 {D, H, M}: row m rotated by angle pos[m] * theta_i. pos i32 {M}.
    virtual void rope(const tensor& x, const tensor& pos, const rope_params& p) = 0;
    // Fused attention (online softmax, no materialised scores): q f32 {D, Hq, M}; k_cache, v_cache
    // {D * Hkv, S} f32/f16; meta i32 {4, T} and slots i32 {T} (T >= M) as described at attention_params;
    // out f32 {D, Hq, M}. Query head h reads kv head h / (Hq / Hkv) (grouped-query attention).
    virtual void attention(const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
                           const tensor& slots, const attention_params& p, const tensor& out) = 0;
    // out = silu(gate) * up, element-wise. All f32 of one shape (out may alias gate).
    virtual void swiglu(const tensor& gate, const tensor& up, const tensor& out) = 0;
    // out = a + b, element-wise, f32 of one shape (out may alias a).
    virtual void add(const tensor& a, const tensor& b, const tensor& out) = 0;
    // Row-wise softmax with a temperature-free max subtraction. x, out f32 {K, M} (out may alias x).
    virtual void softmax(const tensor& x, const tensor& out) = 0;
    // cache row slots[m] = src row m, converted to the cache type (f16: round to nearest even). src f32 {K, M};
    // cache {K, S}; slots i32 {M}, distinct.
    virtual void kv_write(const tensor& src, const tensor& cache, const tensor& slots) = 0;
    // cache row dst[i] = old cache row src[i] for all i at once (all reads happen before any write); dst distinct.
    // cache {K, S}; src, dst i32 {N}. Commits an accepted tree branch by compacting its slots.
    virtual void kv_copy(const tensor& cache, const tensor& src, const tensor& dst) = 0;
    // out[m] = index of the largest x[m][k] (the first on ties). x f32 {K, M}; out i32 {M}.
    virtual void argmax(const tensor& x, const tensor& out) = 0;
    // out_ids[m][j], out_vals[m][j] for j < k: the k largest x[m][*] in descending order (ties: lower index
    // first), values as given (no softmax). x f32 {K, M}; out_ids i32 {k, M}; out_vals f32 {k, M};
    // 1 <= k <= min(K, top_k_max), else tandem::error (invalid argument).
    // A row holding NaN gets k distinct valid ids, otherwise unspecified.
    virtual void top_k(const tensor& x, int32_t k, const tensor& out_ids, const tensor& out_vals) = 0;

    // ---- training: backward passes, loss and optimizer ----
    // All f32 except where stated; outputs are overwritten unless stated. The backward of rope is rope itself with
    // every position negated (the inverse rotation; rope accepts negative positions). The backward of add is the
    // identity. A backend that does not implement an op reports false from supports() and throws
    // tandem::error(TANDEM_ERR_UNSUPPORTED) naming the op and itself (the defaults below).
    //
    // Backward of matmul to its input: dx[m][k] = sum_n w[n][k] * dy[m][n]. w {K, N} of a type for which
    // supports(op::matmul_t, type) (the frozen base weight, possibly quantized); dy {N, M}; dx {K, M}.
    virtual void matmul_t(const tensor& w, const tensor& dy, const tensor& dx);
    // Backward of matmul to its weight: dw[n][k] = beta * dw[n][k] + alpha * sum_m dy[m][n] * x[m][k].
    // dy {N, M}; x {K, M}; dw {K, N}. beta is 0 (dw's old contents are not read, even NaN) or 1 (accumulate).
    virtual void weight_grad(const tensor& dy, const tensor& x, float alpha, float beta, const tensor& dw);
    // Backward of rms_norm (w frozen) to its input. With r = 1 / sqrt(mean(x^2) + eps):
    //   dx[i] = r * w[i] * dy[i] - x[i] * r^3 / K * sum_j w[j] * dy[j] * x[j]
    // x, dy, dx {K, M} (dx may alias dy); w {K}.
    virtual void rms_norm_back(const tensor& x, const tensor& w, const tensor& dy, float eps, const tensor& dx);
    // Backward of swiglu (out = silu(g) * u), element-wise, with s = sigmoid(g):
    //   d_gate = dy * u * s * (1 + g * (1 - s));   d_up = dy * g * s
    // All {K, M} of one shape; d_gate may alias gate or dy, d_up may alias up (each element is read before written).
    virtual void swiglu_back(const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate,
                             const tensor& d_up);
    // Backward of attention, for layouts of contiguous runs only (every row's tree field is -1: causal chains and
    // ragged batches of sequences; a tree walk is tandem::error(TANDEM_ERR_INVALID_ARGUMENT)). Recomputes the
    // softmax from q and k. q {D, Hq, M}; k, v {D * Hkv, S} f32 (the keys/values the forward pass attended to);
    // meta i32 {4, M} as in attention(); out {D, Hq, M} the forward output; d_out {D, Hq, M}; p the forward's
    // parameters. Writes dq {D, Hq, M}, dk and dv {D * Hkv, S} (grouped-query heads sum into their kv head; a slot
    // no row attends to gets zeros). With P the softmax row, dP = d_out . v, dS = P * (dP - d_out . out):
    //   dq[m] = scale * sum_j dS[m][j] k[j];  dk[j] = scale * sum_m dS[m][j] q[m];  dv[j] = sum_m P[m][j] d_out[m]
    virtual void attention_back(const tensor& q, const tensor& k, const tensor& v, const tensor& meta,
                                const tensor& out, const tensor& d_out, const attention_params& p, const tensor& dq,
                                const tensor& dk, const tensor& dv);
    // Backward of get_rows into an f32 table: d_table[ids[m]] += d_out[m] (accumulates; repeated ids add up, in
    // increasing m). d_out {K, M}; ids i32 {M}; d_table f32 {K, R}.
    virtual void get_rows_back(const tensor& d_out, const tensor& ids, const tensor& d_table);
    // Cross-entropy of logits z against sparse target distributions: row m puts probability p[m][j] on token
    // ids[m][j], j < k (a hard label: k = 1, p = 1; distillation: the teacher's top-k). With P_m = sum_j p[m][j]:
    //   loss[m] = sum_j p[m][j] * (logsumexp(z[m]) - z[m][ids[m][j]])
    //   d_logits[m] = grad_scale * (P_m * softmax(z[m]) - sum_j p[m][j] * onehot(ids[m][j]))
    // z {V, M}; ids i32 {k, M}, each in [0, V) (else an error, as for get_rows); p {k, M}; loss {M}; d_logits {V, M}
    // (may alias z). A row whose p are all zero has loss 0 and zero gradient (masked positions).
    virtual void cross_entropy(const tensor& z, const tensor& ids, const tensor& p, float grad_scale,
                               const tensor& loss, const tensor& d_logits);
    // One AdamW step in place on param, m and v (see adamw_params); grad is read only. All of one shape.
    virtual void adamw(const tensor& param, const tensor& grad, const tensor& m, const tensor& v,
                       const adamw_params& p);
    // out = s * x, element-wise (out may alias x).
    virtual void scale(const tensor& x, float s, const tensor& out);
    // out[0] = sum of x[i]^2 over every element of x. out f32 {1}.
    virtual void sum_sq(const tensor& x, const tensor& out);
};

// The compiled-in backends, in a fixed order: "cpu_ref", "cpu", then GPU backends when built.
std::vector<std::string> backend_names();
// Creates a backend by name; throws tandem::error (invalid argument) naming the known backends.
std::unique_ptr<backend> make_backend(const std::string& name);

// Fault injection: true when TANDEM_FAIL_KERNELS (a comma-separated list) names a substring of `kernel` (an
// OpenCL kernel file, a Vulkan shader variant). The device backends then fail to build it through their real
// error path, so tests can check what the layers above do when a device cannot compile a kernel.
bool kernel_failure_forced(const std::string& kernel);

}  // namespace tandem
