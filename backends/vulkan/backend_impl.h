// The Vulkan backend class, shared by the core (vulkan_backend.cpp: memory, transfers, submission, errors)
// and the op launchers (ops/<family>.cpp). A launcher checks shapes, binds tensor ranges, fills a push-constant
// struct that mirrors its shader's and records dispatches with run(); nothing is submitted until the host
// needs data (download, synchronize, upload into host-mapped memory).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/vulkan/commands.h"
#include "backends/vulkan/device.h"
#include "backends/vulkan/memory.h"
#include "backends/vulkan/pipelines.h"
#include "engine/error.h"

namespace tandem::vk {

class vk_backend;

// A backend buffer: a range of a memory block. Releasing it while commands that use it are pending defers
// the release to the next completed submit.
class vk_buffer final : public buffer {
 public:
    vk_buffer(vk_backend& owner, allocation a, size_t bytes) : owner_(owner), alloc_(a), size_(bytes) {}
    ~vk_buffer() override;
    vk_buffer(const vk_buffer&) = delete;
    vk_buffer& operator=(const vk_buffer&) = delete;
    size_t size() const override { return size_; }
    const allocation& alloc() const { return alloc_; }
    const vk_backend& owner() const { return owner_; }

 private:
    vk_backend& owner_;
    allocation alloc_;
    size_t size_;
};

// A bound range of a buffer and the element offset of the tensor's first element inside it (for the block
// formats q8_0 / q4_0 / q4_k / q6_k: its byte offset).
struct view {
    VkDescriptorBufferInfo info{};
    uint32_t elem = 0;
};

// One binding of a dispatch: reads and writes drive the barrier placement; the status word is not tracked
// (only atomics touch it). A read-only binding may be a uniform texel buffer of format `texel` instead of a
// storage buffer.
struct arg {
    view v;
    bool write = false;
    bool tracked = true;
    VkFormat texel = VK_FORMAT_UNDEFINED;
};

using groups = std::array<uint32_t, 3>;

// v as a 32-bit shader parameter; throws tandem::error(TANDEM_ERR_UNSUPPORTED) when it does not fit.
inline uint32_t to_u32(int64_t v, const char* what) {
    if (v < 0 || v > int64_t(UINT32_MAX))
        throw error(TANDEM_ERR_UNSUPPORTED, std::string("vulkan: ") + what + " is too large");
    return uint32_t(v);
}

class vk_backend final : public backend {
 public:
    explicit vk_backend(const std::string& selector);
    ~vk_backend() override;

    std::string name() const override { return "vulkan"; }
    std::string describe() const override {
        return "vulkan: " + dev_.describe() + "; " + (cpu_kernels_ ? "CPU" : "GPU") + "-family kernels";
    }
    bool supports(op o, dtype t) const override;

    std::unique_ptr<buffer> alloc(size_t bytes) override;
    std::unique_ptr<buffer> wrap_host(const void* data, size_t bytes) override;
    void upload(buffer& dst, size_t offset, const void* src, size_t bytes) override;
    void download(const buffer& src, size_t offset, void* dst, size_t bytes) override;
    void synchronize() override;

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

    // training (ops/train_*.cpp)
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

    // ---- for the launchers ----
    const device_limits& limits() const { return dev_.limits(); }
    // The range holding all of t (rows [row0, row0 + n_rows) of t seen as ne[0] x nrows), bound at the largest
    // storage-aligned offset at or before it. Throws when the range exceeds maxStorageBufferRange.
    view bind(const tensor& t) const;
    view bind_rows(const tensor& t, int64_t row0, int64_t n_rows) const;
    // Most rows of t one binding can hold (>= 1).
    int64_t max_bound_rows(const tensor& t) const;
    arg status() const;
    // A read-only uniform texel buffer binding of v: elements of type t (f32 or f16) read `lanes` (1 or 4) at a
    // time as R32/R16_SFLOAT or RGBA32F/RGBA16F texels, or (f16, 8 lanes) as raw RGBA32UI texels of 8 halves;
    // v.elem must be a multiple of lanes.
    arg texel(const view& v, dtype t, uint32_t lanes) const;
    // The same range as raw RGBA32UI texels (16 bytes each, range rounded up to whole texels): quantized blocks.
    arg texel_words(const view& v) const;
    // True when those formats are readable as uniform texel buffers. On lavapipe a 4-wide texel fetch loads
    // like a vector load while every storage-buffer load goes lane by lane and element by element (measured:
    // ~10x the bandwidth), so the CPU-family kernels read weights, activations and the KV cache through them.
    bool texel_reads() const { return texel_reads_; }
    // A backend-owned device buffer reused by every op that needs `which` (grown on demand).
    enum scratch_id {
        scratch_attention = 0,
        scratch_kv_copy = 1,
        scratch_top_k = 2,
        scratch_sum_sq = 3,
        scratch_attention_back = 4,
        n_scratch = 5
    };
    view scratch(scratch_id which, VkDeviceSize bytes);
    // The rope inverse-frequency table of (n_rot, base), uploaded once.
    view rope_table(int32_t n_rot, float freq_base);

    // Records one dispatch of `variant` (constant_id i = spec[i]; push = the shader's push-constant block).
    template <typename P>
    void run(const char* variant, std::initializer_list<uint32_t> spec, std::initializer_list<arg> args, const P& push,
             groups g) {
        static_assert(sizeof(P) % 4 == 0 && sizeof(P) <= k_push_bytes);
        record(variant, spec, args, &push, uint32_t(sizeof(P)), g);
    }
    // True for the kernel variants made for CPU-like devices (lavapipe: work-groups run as SIMD loops, so
    // per-invocation loops beat barriers and shared memory): device type CPU, or env
    // TANDEM_VULKAN_KERNELS=cpu|gpu to pick either family on any device (the tests run both).
    bool cpu_kernels() const { return cpu_kernels_; }
    // Work-groups for n_groups groups laid out as a 2D grid within the device's per-dimension limit.
    groups grid(uint64_t n_groups) const;
    // The m activation rows of a matmul as chunks of at most chunk_m rows for shaders with a per-invocation
    // row count MC: `chunks` z-groups of `mc` rows starting at row m0 (whole chunks, then the remainder).
    struct row_chunks {
        uint32_t mc, m0, chunks;
    };
    std::vector<row_chunks> activation_chunks(int64_t m, int64_t chunk_m) const;
    // The largest power of two <= want that the device accepts as a 1D work-group size.
    uint32_t group_size(uint32_t want) const;
    // Loop iterations one invocation may run: on lavapipe well under its silent 65,535 limit, elsewhere
    // unlimited; env TANDEM_VULKAN_LOOP_BUDGET overrides it (tests use a small one to exercise the splits).
    uint64_t loop_budget() const { return loop_budget_; }

    void release(allocation a);

 private:
    void matmul_quant(const tensor& w, const tensor& x, const tensor& out);   // Q8_0 / Q4_0 weights
    void matmul_kquant(const tensor& w, const tensor& x, const tensor& out);  // Q4_K / Q6_K weights
    void record(const char* variant, std::initializer_list<uint32_t> spec, std::initializer_list<arg> args,
                const void* push, uint32_t push_bytes, groups g);
    allocation allocate(size_t bytes, bool zero);
    void write_buffer(const allocation& a, size_t offset, const void* src, size_t bytes);
    void flush();
    void raise_pending();
    const allocation& allocation_of(const buffer& b) const;

    device dev_;
    allocator mem_;
    pipeline_store pipelines_;
    descriptor_cache descriptors_;
    recorder rec_;
    allocation status_;
    uint64_t loop_budget_ = 0;
    bool cpu_kernels_ = false;
    bool texel_reads_ = false;
    uint32_t pending_errors_ = 0;
    std::vector<allocation> deferred_;  // released after the next completed submit
    VkDeviceSize staged_bytes_ = 0;     // staging in use by pending transfers
    std::array<allocation, n_scratch> scratch_{};
    std::map<std::pair<int32_t, float>, allocation> rope_tables_;
};

}  // namespace tandem::vk
