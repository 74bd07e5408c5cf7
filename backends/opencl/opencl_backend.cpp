// The OpenCL backend's core: device setup, tuning from device queries, memory and transfers, the device error
// word, and the entry points declared in backends/opencl/opencl.h. The ops are in ops/<family>.cpp.
#include "backends/opencl/opencl_backend.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "backends/opencl/log.h"
#include "backends/opencl/opencl.h"
#include "engine/error.h"

namespace tandem::opencl {

namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

// The value of env `name` among `options`, `fallback` when unset; anything else is an invalid argument.
template <typename T>
T env_choice(const char* name, std::initializer_list<std::pair<const char*, T>> options, T fallback) {
    const std::string v = env(name);
    if (v.empty()) return fallback;
    std::string known;
    for (const auto& [text, value] : options) {
        if (v == text) return value;
        known += std::string(known.empty() ? "" : ", ") + text;
    }
    throw error(TANDEM_ERR_INVALID_ARGUMENT, std::string(name) + " must be one of " + known + ", not '" + v + "'");
}

size_t floor_pow2(size_t v) {
    size_t p = 1;
    while (p * 2 <= v) p *= 2;
    return p;
}

// Kernel variants from the device class. PoCL (a CPU device) runs a work-group as a loop over its
// work-items: reductions across work-items only add loop overhead there, while GPUs need them to fill the
// machine. So CPU devices get "one row per work-item" kernels, GPUs "one work-group per row".
tuning choose_tuning(const device_info& dev) {
    tuning t;
    const bool cpu = dev.is_cpu();
    const size_t max_wg = std::max<size_t>(1, dev.max_work_group);
    t.gemv = env_choice("TANDEM_OPENCL_GEMV", {{"row", gemv_variant::row}, {"wg", gemv_variant::wg}},
                        cpu ? gemv_variant::row : gemv_variant::wg);
    t.gemm = env_choice(
        "TANDEM_OPENCL_GEMM",
        {{"tandem", gemm_variant::tandem}, {"clblast", gemm_variant::clblast}, {"auto", gemm_variant::auto_select}},
        gemm_variant::auto_select);
    t.mm = env_choice("TANDEM_OPENCL_MM", {{"tiled", mm_variant::tiled}, {"dot", mm_variant::dot}},
                      cpu ? mm_variant::dot : mm_variant::tiled);
    // PoCL runs a work-item's stream with only the core's out-of-order window to overlap its misses: on a
    // 2-vCPU Xeon the Q4_0 GEMV read 8-10 GB/s from DRAM against 21 GB/s for PoCL's read kernel (and 21 GB/s
    // from L3), so the GEMV kernels prefetch a few KiB ahead there (kernels/mul_mv_q4_0_g16.cl).
    const bool pocl = dev.platform_name.find("Portable Computing Language") != std::string::npos;
    t.prefetch = env_choice("TANDEM_OPENCL_PREFETCH", {{"on", true}, {"off", false}}, cpu && pocl);
    // PoCL's CPU device is the host's CPU, so the host's cpuid says whether its kernels may use AVX512-VNNI.
#if defined(__x86_64__) || defined(__i386__)
    const bool vnni = __builtin_cpu_supports("avx512vnni");
#else
    const bool vnni = false;
#endif
    t.x86_simd = env_choice("TANDEM_OPENCL_X86", {{"vnni", 3}, {"avx512", 2}, {"avx2", 1}, {"off", 0}},
                            !(cpu && pocl) ? 0 : vnni ? 3 : 2);
    if (t.x86_simd == 3 && !vnni)
        throw error(TANDEM_ERR_UNSUPPORTED, "TANDEM_OPENCL_X86=vnni: this CPU has no AVX512-VNNI");
    t.reduce_wgs = cpu ? 1 : std::min<size_t>(256, floor_pow2(max_wg));
    t.reduce_rows = cpu ? std::min<size_t>(64, floor_pow2(max_wg)) : 1;
    // Any size works (kernels/topk.cl); the override lets the tests run the GPU layout on a CPU device.
    t.topk_wgs = t.reduce_wgs;
    if (const std::string v = env("TANDEM_OPENCL_TOPK_WGS"); !v.empty()) {
        const long n = std::strtol(v.c_str(), nullptr, 10);
        if (n < 1 || size_t(n) > max_wg)
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        "TANDEM_OPENCL_TOPK_WGS must be in [1, " + std::to_string(max_wg) + "], not '" + v + "'");
        t.topk_wgs = size_t(n);
    }
    t.auto_wgs = std::min<size_t>(cpu ? 256 : 64, floor_pow2(max_wg));
    t.gemv_wgs = std::min<size_t>(cpu ? 16 : 64, floor_pow2(max_wg));
    // Tiles of kernels/mul_mm.cl: TM x TN outputs per work-group, RM x RN per work-item.
    const int tm = 32, tn = 32, tk = 16, rm = 4, rn = 4;
    t.mm_defines = "-DMM_TM=" + std::to_string(tm) + " -DMM_TN=" + std::to_string(tn) +
                   " -DMM_TK=" + std::to_string(tk) + " -DMM_RM=" + std::to_string(rm) +
                   " -DMM_RN=" + std::to_string(rn);
    t.mm_local[0] = size_t(tn / rn), t.mm_local[1] = size_t(tm / rm);
    t.mm_tile[0] = size_t(tn), t.mm_tile[1] = size_t(tm);
    t.mm_defines += " -DMMD_RN=" + std::to_string(t.mmd_block[0]) + " -DMMD_RM=" + std::to_string(t.mmd_block[1]);
    return t;
}

}  // namespace

std::string opencl_backend::describe() const {
    static const char* const x86[] = {"off", "avx2", "avx512", "vnni"};
    const bool clblast = tune_.gemm != gemm_variant::tandem;
    return "opencl: " + dev_.label() + " (" + dev_.type_name() + ", " + dev_.platform_version + ", driver " +
           dev_.driver_version + "); gemv " + (tune_.gemv == gemv_variant::row ? "row" : "wg") + ", mm " +
           (tune_.mm == mm_variant::dot ? "dot" : "tiled") + ", gemm " +
           (tune_.gemm == gemm_variant::auto_select ? "auto" : clblast ? "clblast" : "tandem") + ", prefetch " +
           (tune_.prefetch ? "on" : "off") + ", x86 " + x86[std::clamp(tune_.x86_simd, 0, 3)];
}

opencl_backend::opencl_backend(const std::string& device_spec) : dev_(select_device(device_spec)) {
    cl_int st = CL_SUCCESS;
    const cl_context_properties props[] = {CL_CONTEXT_PLATFORM, reinterpret_cast<cl_context_properties>(dev_.platform),
                                           0};
    ctx_ = context_handle(clCreateContext(props, 1, &dev_.id, nullptr, nullptr, &st));
    check(st, ("clCreateContext on " + dev_.name).c_str());
    queue_ = queue_handle(clCreateCommandQueue(ctx_.get(), dev_.id, 0, &st));  // in order, no profiling
    check(st, "clCreateCommandQueue");
    programs_ = std::make_unique<program_cache>(ctx_.get(), dev_);
    tune_ = choose_tuning(dev_);
    cl_int zero = 0;
    err_ = mem_handle(clCreateBuffer(ctx_.get(), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof zero, &zero, &st));
    check(st, "clCreateBuffer (error word)");
    log().debug("device {} ({}, driver {}), gemv {}, reduce wgs {}", dev_.label(), dev_.type_name(),
                dev_.driver_version, tune_.gemv == gemv_variant::row ? "row" : "wg", tune_.reduce_wgs);
}

opencl_backend::~opencl_backend() {
    if (queue_) clFinish(queue_.get());  // nothing may still write into buffers the caller frees next
}

bool opencl_backend::supports(op o, dtype t) const {
    switch (o) {
        case op::matmul_t:  // kernels/train_matmul.cl reads every weight type matmul reads, in its packed blocks
        case op::get_rows:
        case op::matmul:  // quantized weights: kernels/mul_mv_quant.cl, mul_mm_quant.cl, get_rows.cl, *_kquant.cl
            return t == dtype::f32 || t == dtype::f16 || t == dtype::q8_0 || t == dtype::q4_0 || t == dtype::q4_k ||
                   t == dtype::q6_k;
        case op::attention:
        case op::kv_write:
        case op::kv_copy:
            return t == dtype::f32 || t == dtype::f16;
        default:
            return t == dtype::f32;
    }
}

mem_arg opencl_backend::arg(const tensor& t) {
    TANDEM_ASSERT(t.buf != nullptr);
    const auto* b = dynamic_cast<const cl_buffer*>(t.buf);
    if (!b) throw error(TANDEM_ERR_INVALID_ARGUMENT, "opencl: a tensor's buffer belongs to another backend");
    return mem_arg{b->mem(), cl_ulong(t.offset)};
}

void opencl_backend::check_alloc_size(size_t bytes) const {
    if (bytes > dev_.max_alloc && dev_.max_alloc > 0)
        throw error(TANDEM_ERR_BACKEND, "opencl: a buffer of " + std::to_string(bytes >> 20) + " MiB exceeds " +
                                            dev_.name + "'s largest allocation (" +
                                            std::to_string(dev_.max_alloc >> 20) +
                                            " MiB, CL_DEVICE_MAX_MEM_ALLOC_SIZE)");
}

std::unique_ptr<buffer> opencl_backend::alloc(size_t bytes) {
    check_alloc_size(bytes);
    const size_t padded = std::max<size_t>(64, (bytes + 63) / 64 * 64);  // fill patterns need a multiple of 4
    cl_int st = CL_SUCCESS;
    mem_handle m(clCreateBuffer(ctx_.get(), CL_MEM_READ_WRITE, padded, nullptr, &st));
    check(st, ("clCreateBuffer of " + std::to_string(bytes) + " bytes").c_str());
    const cl_uint zero = 0;  // zero-initialised like the CPU backends' buffers
    check(clEnqueueFillBuffer(queue_.get(), m.get(), &zero, sizeof zero, 0, padded, 0, nullptr, nullptr),
          "clEnqueueFillBuffer");
    return std::make_unique<cl_buffer>(std::move(m), bytes);
}

std::unique_ptr<buffer> opencl_backend::wrap_host(const void* data, size_t bytes) {
    if (bytes == 0) return alloc(0);
    check_alloc_size(bytes);
    // One copy at creation; CL_MEM_USE_HOST_PTR could be zero-copy on CPU devices but lets the driver write
    // back into what may be a read-only mmap of the model file.
    cl_int st = CL_SUCCESS;
    mem_handle m(
        clCreateBuffer(ctx_.get(), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, const_cast<void*>(data), &st));
    check(st, ("clCreateBuffer of " + std::to_string(bytes) + " bytes from host memory").c_str());
    return std::make_unique<cl_buffer>(std::move(m), bytes);
}

void opencl_backend::upload(buffer& dst, size_t offset, const void* src, size_t bytes) {
    TANDEM_ASSERT(offset <= dst.size() && bytes <= dst.size() - offset);
    if (bytes == 0) return;
    dst.drop_layouts(offset, bytes);
    const auto& b = dynamic_cast<cl_buffer&>(dst);
    // Blocking, on the in-order queue: every op enqueued earlier has read the old contents.
    check(clEnqueueWriteBuffer(queue_.get(), b.mem(), CL_TRUE, offset, bytes, src, 0, nullptr, nullptr),
          "clEnqueueWriteBuffer");
}

void opencl_backend::download(const buffer& src, size_t offset, void* dst, size_t bytes) {
    TANDEM_ASSERT(offset <= src.size() && bytes <= src.size() - offset);
    const auto& b = dynamic_cast<const cl_buffer&>(src);
    if (bytes > 0)
        check(clEnqueueReadBuffer(queue_.get(), b.mem(), CL_TRUE, offset, bytes, dst, 0, nullptr, nullptr),
              "clEnqueueReadBuffer");
    else
        check(clFinish(queue_.get()), "clFinish");
    check_device_errors();
}

void opencl_backend::synchronize() {
    check(clFinish(queue_.get()), "clFinish");
    check_device_errors();
}

void opencl_backend::check_device_errors() {
    if (!err_pending_) return;
    err_pending_ = false;
    cl_int word = 0;
    check(clEnqueueReadBuffer(queue_.get(), err_.get(), CL_TRUE, 0, sizeof word, &word, 0, nullptr, nullptr),
          "clEnqueueReadBuffer (error word)");
    if (word == 0) return;
    const cl_int zero = 0;
    check(clEnqueueWriteBuffer(queue_.get(), err_.get(), CL_TRUE, 0, sizeof zero, &zero, 0, nullptr, nullptr),
          "clEnqueueWriteBuffer (error word)");
    std::string what;
    auto add = [&](cl_int bit, const char* text) {
        if (word & bit) what += std::string(what.empty() ? "" : "; ") + text;
    };
    add(err_get_rows_id, "get_rows: an id is outside the table");
    add(err_attention_slot, "attention: a visible slot is outside the cache");
    add(err_attention_tree, "attention: bad tree (a link leaves the batch or forms a cycle)");
    add(err_kv_write_slot, "kv_write: slot out of range");
    add(err_kv_copy_slot, "kv_copy: slot out of range");
    add(err_get_rows_back_id, "get_rows_back: an id is outside the table");
    add(err_cross_entropy_id, "cross_entropy: a target id is outside the vocabulary");
    add(err_attention_back_tree, "attention_back: a row walks a token tree (only contiguous runs have a backward)");
    add(err_attention_back_slot, "attention_back: a row's run of slots is outside k/v");
    throw error(TANDEM_ERR_INVALID_ARGUMENT, "opencl: " + what + " (detected on the device; those rows were skipped)");
}

cl_mem opencl_backend::scratch(size_t bytes) {
    if (bytes > scratch_bytes_ || !scratch_) {
        // The old buffer may still be in use by enqueued commands; OpenCL keeps it alive until they finish.
        const size_t n = std::max<size_t>(bytes, 4096);
        cl_int st = CL_SUCCESS;
        scratch_ = mem_handle(clCreateBuffer(ctx_.get(), CL_MEM_READ_WRITE, n, nullptr, &st));
        check(st, "clCreateBuffer (scratch)");
        scratch_bytes_ = n;
    }
    return scratch_.get();
}

size_t opencl_backend::kernel_max_wgs(cl_kernel k) {
    auto it = kernel_wgs_.find(k);
    if (it != kernel_wgs_.end()) return it->second;
    size_t n = 0;
    check(clGetKernelWorkGroupInfo(k, dev_.id, CL_KERNEL_WORK_GROUP_SIZE, sizeof n, &n, nullptr),
          "clGetKernelWorkGroupInfo");
    return kernel_wgs_[k] = std::max<size_t>(1, n);
}

void opencl_backend::launch(cl_kernel k, const char* what, int dims, const size_t* global, const size_t* local) {
    TANDEM_ASSERT(dims >= 1 && dims <= 3);
    size_t g[3] = {1, 1, 1}, l[3] = {1, 1, 1};
    bool auto_local = true;
    for (int d = 0; d < dims; ++d) {
        if (global[d] == 0) return;  // an empty op
        if (local[d] != 0) auto_local = false;
    }
    size_t budget = floor_pow2(std::min(tune_.auto_wgs, kernel_max_wgs(k)));
    for (int d = 0; d < dims; ++d) {
        if (auto_local) {
            l[d] = 1;
            while (l[d] < global[d] && l[d] * 2 <= budget) l[d] *= 2;
            budget /= l[d];
        } else {
            l[d] = std::max<size_t>(1, local[d]);
        }
        g[d] = (global[d] + l[d] - 1) / l[d] * l[d];
    }
    const cl_int st = clEnqueueNDRangeKernel(queue_.get(), k, cl_uint(dims), nullptr, g, l, 0, nullptr, nullptr);
    if (st != CL_SUCCESS) check(st, (std::string("clEnqueueNDRangeKernel ") + what).c_str());
}

cl_int dim(int64_t v, const char* op) {
    if (v < 0 || v > INT32_MAX)
        throw error(TANDEM_ERR_UNSUPPORTED, std::string("opencl: ") + op + ": dimension " + std::to_string(v) +
                                                " exceeds the kernels' 32-bit indices");
    return cl_int(v);
}

opencl_backend& as_opencl(backend& b) {
    auto* o = dynamic_cast<opencl_backend*>(&b);
    TANDEM_ASSERT(o != nullptr);
    return *o;
}

const opencl_backend& as_opencl(const backend& b) {
    const auto* o = dynamic_cast<const opencl_backend*>(&b);
    TANDEM_ASSERT(o != nullptr);
    return *o;
}

}  // namespace tandem::opencl

namespace tandem {

std::unique_ptr<backend> make_opencl_backend(const std::string& device) {
    return std::make_unique<opencl::opencl_backend>(device);
}

std::string opencl_devices_report() { return opencl::devices_report(); }

opencl_cache_stats opencl_stats(const backend& b) {
    auto& o = const_cast<opencl::opencl_backend&>(opencl::as_opencl(b));
    const auto& s = o.programs().stats();
    return opencl_cache_stats{s.built_from_source, s.loaded_from_disk, s.disk_rejected};
}

void opencl_build_for_test(backend& b, const std::string& file_name, const std::string& source) {
    opencl::as_opencl(b).programs().build_text(file_name, source, "");
}

std::string opencl_gemv_variant(const backend& b) {
    return opencl::as_opencl(b).tune().gemv == opencl::gemv_variant::row ? "row" : "wg";
}

std::string opencl_gemm_variant(const backend& b) {
    switch (opencl::as_opencl(b).tune().gemm) {
        case opencl::gemm_variant::tandem:
            return "tandem";
        case opencl::gemm_variant::clblast:
            return "clblast";
        case opencl::gemm_variant::auto_select:
            return "auto";
    }
    return "auto";
}

}  // namespace tandem
