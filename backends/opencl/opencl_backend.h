// The OpenCL backend: one context and ONE in-order queue per instance; every op is enqueued without waiting
// (download() and synchronize() wait). Buffers are plain cl_mem objects; tensor views reach kernels as
// (buffer, byte offset) argument pairs, never sub-buffers (their alignment rules would reject views).
// Kernels detect bad indices (ids, slots, tree links) on the device, skip them and raise a bit in an error
// word that the next download()/synchronize() turns into tandem::error. Ops live in ops/<family>.cpp.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "backends/backend.h"
#include "backends/opencl/cl_handles.h"
#include "backends/opencl/device.h"
#include "backends/opencl/program_cache.h"

namespace tandem::opencl {

class cl_buffer final : public buffer {
 public:
    cl_buffer(mem_handle mem, size_t bytes) : mem_(std::move(mem)), size_(bytes) {}
    size_t size() const override { return size_; }
    cl_mem mem() const { return mem_.get(); }

 private:
    mem_handle mem_;
    size_t size_;
};

// A tensor argument: two kernel arguments, the buffer and the byte offset of the view.
struct mem_arg {
    cl_mem mem;
    cl_ulong offset;
};

// Bits of the device error word (kernels/common.cl has the same values).
enum device_error : cl_int {
    err_get_rows_id = 1,
    err_attention_slot = 2,
    err_attention_tree = 4,
    err_kv_write_slot = 8,
    err_kv_copy_slot = 16,
    // training ops (the kernels/train_*.cl files that raise them define the same values)
    err_get_rows_back_id = 32,
    err_cross_entropy_id = 64,
    err_attention_back_tree = 128,
    err_attention_back_slot = 256,
};

enum class gemv_variant { row, wg };
enum class gemm_variant { tandem, clblast, auto_select };
enum class mm_variant { tiled, dot };  // our matrix-matrix kernel: local-memory tiles (GPU) or register dots (CPU)

// Kernel variants and launch sizes, chosen once from the device type (and env overrides).
struct tuning {
    gemv_variant gemv = gemv_variant::row;
    gemm_variant gemm = gemm_variant::auto_select;
    size_t reduce_wgs = 1;      // work-items per row of row reductions (rms_norm, softmax, argmax)
    size_t reduce_rows = 1;     // rows per work-group of row reductions
    size_t topk_wgs = 1;        // work-items per row of top_k: reduce_wgs, or env TANDEM_OPENCL_TOPK_WGS (any size)
    size_t auto_wgs = 64;       // work-group size for kernels that leave it to the backend
    size_t gemv_wgs = 64;       // "row": work-items per group; "wg": the group that shares one row
    int64_t gemm_min_rows = 8;  // matmul with at least this many x rows uses a matrix-matrix kernel
    mm_variant mm = mm_variant::tiled;
    std::string mm_defines;  // tile sizes of kernels/mul_mm.cl
    size_t mm_local[2] = {8, 8};
    size_t mm_tile[2] = {32, 32};  // outputs per work-group along n and m ("tiled")
    size_t mmd_block[2] = {2, 4};  // outputs per work-item along n and m ("dot")
    // The GEMV kernels prefetch their weight stream (PREFETCH_LINE in kernels/common.cl): CPU devices of PoCL, whose
    // clang compiles __builtin_prefetch; env TANDEM_OPENCL_PREFETCH=on|off overrides.
    bool prefetch = false;
    // The widest x86 vector builtins the g16 GEMV (kernels/mul_mv_q4_0_g16.cl) may use where the device compiler
    // targets them (__AVX512BW__ / __AVX2__ defined): 3 = AVX512-VNNI, 2 = AVX-512BW, 1 = AVX2, 0 = portable OpenCL
    // C. PoCL's CPU devices: 3 where the host CPU has VNNI, else 2; other devices 0. All give the same bits; env
    // TANDEM_OPENCL_X86=vnni|avx512|avx2|off sets it (tests, diagnosis; vnni on a CPU without it is refused).
    int x86_simd = 0;
};

class opencl_backend final : public backend {
 public:
    explicit opencl_backend(const std::string& device_spec);
    ~opencl_backend() override;

    std::string name() const override { return "opencl"; }
    std::string describe() const override;
    bool supports(op o, dtype t) const override;

    std::unique_ptr<buffer> alloc(size_t bytes) override;
    std::unique_ptr<buffer> wrap_host(const void* data, size_t bytes) override;
    void upload(buffer& dst, size_t offset, const void* src, size_t bytes) override;
    void download(const buffer& src, size_t offset, void* dst, size_t bytes) override;
    void synchronize() override;
    // Q4_0 / Q8_0 weights on CPU-class devices (the "row" GEMV) get the g16 / wide layouts of
    // kernels/mul_mv_q4_0_g16.cl / mul_mv_quant.cl, derived on the device (ops/matmul_quant.cpp); the original
    // stays for get_rows, matmul_t and the GEMM kernels.
    bool prepare_weight(const tensor& w) override;

    void get_rows(const tensor& table, const tensor& ids, const tensor& out) override;
    void rms_norm(const tensor& x, const tensor& w, float eps, const tensor& out) override;
    void matmul(const tensor& w, const tensor& x, const tensor& out) override;
    void rope(const tensor& x, const tensor& pos, const rope_params& p) override;
    void attention(const tensor& q, const tensor& k_cache, const tensor& v_cache, const tensor& meta,
                   const tensor& slots, const attention_params& p, const tensor& out) override;
    void swiglu(const tensor& gate, const tensor& up, const tensor& out) override;
    void add(const tensor& a, const tensor& b, const tensor& out) override;
    void softmax(const tensor& x, const tensor& out) override;
    void kv_write(const tensor& src, const tensor& cache, const tensor& slots) override;
    void kv_copy(const tensor& cache, const tensor& src, const tensor& dst) override;
    void argmax(const tensor& x, const tensor& out) override;
    void top_k(const tensor& x, int32_t k, const tensor& out_ids, const tensor& out_vals) override;

    // training (ops/train_*.cpp, kernels/train_*.cl)
    void matmul_t(const tensor& w, const tensor& dy, const tensor& dx) override;
    void weight_grad(const tensor& dy, const tensor& x, float alpha, float beta, const tensor& dw) override;
    void rms_norm_back(const tensor& x, const tensor& w, const tensor& dy, float eps, const tensor& dx) override;
    void swiglu_back(const tensor& gate, const tensor& up, const tensor& dy, const tensor& d_gate,
                     const tensor& d_up) override;
    void attention_back(const tensor& q, const tensor& k, const tensor& v, const tensor& meta, const tensor& out,
                        const tensor& d_out, const attention_params& p, const tensor& dq, const tensor& dk,
                        const tensor& dv) override;
    void get_rows_back(const tensor& d_out, const tensor& ids, const tensor& d_table) override;
    void cross_entropy(const tensor& z, const tensor& ids, const tensor& p, float grad_scale, const tensor& loss,
                       const tensor& d_logits) override;
    void adamw(const tensor& param, const tensor& grad, const tensor& m, const tensor& v,
               const adamw_params& p) override;
    void scale(const tensor& x, float s, const tensor& out) override;
    void sum_sq(const tensor& x, const tensor& out) override;

    // ---- for the launchers in ops/ and the test hooks ----
    const device_info& dev() const { return dev_; }
    const tuning& tune() const { return tune_; }
    program_cache& programs() { return *programs_; }
    cl_command_queue queue() const { return queue_.get(); }
    cl_kernel kernel(const char* file, const char* name, const std::string& defines = "") {
        return programs_->kernel(file, name, defines);
    }
    static mem_arg arg(const tensor& t);
    // The device error word; passing it to a kernel marks it for checking at the next wait.
    cl_mem error_word() {
        err_pending_ = true;
        return err_.get();
    }
    // A device buffer of at least `bytes`, reused across ops (the in-order queue serialises its users).
    cl_mem scratch(size_t bytes);

    template <typename... A>
    void set_args(cl_kernel k, const A&... a) {
        cl_uint i = 0;
        (set_arg(k, i, a), ...);
    }
    // Enqueues k over `global` work-items, rounded up to multiples of `local`. An all-zero `local` means
    // "the backend's choice": up to tune().auto_wgs work-items, filling dimension 0 first (kernels bound-check
    // every dimension). Never the driver's choice: PoCL then picks tiny groups and pays ~5 us for each.
    void launch(cl_kernel k, const char* what, int dims, const size_t* global, const size_t* local);

 private:
    static void set_arg(cl_kernel k, cl_uint& i, const mem_arg& m) {
        set_arg(k, i, m.mem);
        set_arg(k, i, m.offset);
    }
    template <typename T>
    static void set_arg(cl_kernel k, cl_uint& i, const T& v) {
        check(clSetKernelArg(k, i, sizeof(T), &v), "clSetKernelArg");
        ++i;
    }
    void check_device_errors();
    void check_alloc_size(size_t bytes) const;
    size_t kernel_max_wgs(cl_kernel k);
    void matmul_clblast(const tensor& w, const tensor& x, const tensor& out);
    void matmul_quant(const tensor& w, const tensor& x, const tensor& out);  // Q8_0 / Q4_0 / Q4_K / Q6_K weights
    void matmul_q4_0_g16(const tensor& w, cl_int runs, const tensor& x, const tensor& out, int rows);
    bool use_clblast(const tensor& w, int64_t m_rows) const;

    device_info dev_;
    context_handle ctx_;
    queue_handle queue_;
    std::unique_ptr<program_cache> programs_;
    tuning tune_;
    mem_handle err_;
    bool err_pending_ = false;
    mem_handle scratch_;
    size_t scratch_bytes_ = 0;
    std::map<std::pair<int32_t, float>, mem_handle> rope_tables_;
    std::map<cl_kernel, size_t>
        kernel_wgs_;  // CL_KERNEL_WORK_GROUP_SIZE per kernel  // (n_rot, freq_base) -> inverse frequencies
};

// A dimension as a kernel's int argument; sizes past INT_MAX elements are refused, not truncated.
cl_int dim(int64_t v, const char* op);

// The backend behind a tandem::backend created by make_opencl_backend (TANDEM_ASSERT otherwise).
opencl_backend& as_opencl(backend& b);
const opencl_backend& as_opencl(const backend& b);

}  // namespace tandem::opencl
