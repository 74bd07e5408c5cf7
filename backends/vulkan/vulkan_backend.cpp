// The Vulkan backend core: buffers, uploads and downloads on both memory paths, the dispatch helper, one
// submit per flush, and the device-side status word that turns bad ids, slots and trees into tandem::error.
#include "backends/vulkan/vulkan_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backends/vulkan/backend_impl.h"
#include "backends/vulkan/log.h"
#include "engine/error.h"

namespace tandem {

std::unique_ptr<backend> make_vulkan_backend(const std::string& selector) {
    return std::make_unique<vk::vk_backend>(selector);
}

std::string vulkan_devices_report() { return vk::devices_report(); }

uint64_t vulkan_validation_errors() { return vk::g_validation_errors.load(); }

bool vulkan_validation_available() { return vk::validation_layer_available(); }

namespace vk {

namespace {

// Status bits set by the shaders (shaders/include/common.glsl) and what they mean.
struct status_bit {
    uint32_t bit;
    const char* what;
};
constexpr status_bit k_status_bits[] = {
    {1u, "get_rows: an id is outside the table"},
    {2u, "kv_write: a slot is outside the cache"},
    {4u, "kv_copy: a slot is outside the cache"},
    {8u, "attention: a row's run [kv_begin, kv_begin + kv_len) is outside the cache"},
    {16u, "attention: bad tree (a tree or parent row outside the batch, or a cycle)"},
    {32u, "attention: a tree row's slot is outside the cache"},
    {64u, "attention: a token tree deeper than this device's walk limit (lavapipe loop limit)"},
    {128u, "get_rows_back: an id is outside the table"},
    {256u, "cross_entropy: a target id is outside the vocabulary"},
    {512u, "attention_back: a row walks a token tree (only contiguous runs have a backward pass)"},
    {1024u, "attention_back: a row's run [kv_begin, kv_begin + kv_len) is outside k and v"},
};

// Staging chunk and the most staging memory pending transfers may hold before a flush.
constexpr VkDeviceSize k_staging_chunk = VkDeviceSize(16) << 20;
constexpr VkDeviceSize k_staging_limit = VkDeviceSize(64) << 20;

bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v && *v && std::strcmp(v, "0") != 0;
}

uint32_t elem_bytes(dtype t) {
    switch (t) {
        case dtype::f32:
        case dtype::i32:
            return 4;
        case dtype::f16:
            return 2;
        case dtype::q8_0:
        case dtype::q4_0:
        case dtype::q4_k:
        case dtype::q6_k:
            return 1;  // block formats: views count bytes (shaders/include/quant.glsl, kquant.glsl read the words)
        default:
            throw error(TANDEM_ERR_UNSUPPORTED,
                        "vulkan: tensors of type " + std::string(dtype_name(t)) + " are not supported");
    }
}

}  // namespace

vk_buffer::~vk_buffer() { owner_.release(alloc_); }

vk_backend::vk_backend(const std::string& selector)
    : dev_(selector),
      mem_(dev_, env_flag("TANDEM_VULKAN_FORCE_STAGING")),
      pipelines_(dev_),
      descriptors_(dev_),
      rec_(dev_, env_flag("TANDEM_VULKAN_PROFILE")) {
    // A block's VkBuffer dies only when no command is pending, so dropping every cached set is safe then.
    mem_.set_block_release_hook([this](VkBuffer) { descriptors_.clear(); });
    loop_budget_ = dev_.limits().loop_limited ? 32768 : uint64_t(1) << 40;
    if (const char* b = std::getenv("TANDEM_VULKAN_LOOP_BUDGET"); b && *b)
        loop_budget_ = std::max(64ull, std::strtoull(b, nullptr, 10));
    cpu_kernels_ = dev_.properties().deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    if (const char* k = std::getenv("TANDEM_VULKAN_KERNELS"); k && *k) {
        if (std::strcmp(k, "cpu") != 0 && std::strcmp(k, "gpu") != 0)
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        std::string("vulkan: TANDEM_VULKAN_KERNELS must be cpu or gpu, not ") + k);
        cpu_kernels_ = std::strcmp(k, "cpu") == 0;
    }
    {
        texel_reads_ = true;
        for (VkFormat f : {VK_FORMAT_R32_SFLOAT, VK_FORMAT_R16_SFLOAT, VK_FORMAT_R32G32B32A32_SFLOAT,
                           VK_FORMAT_R16G16B16A16_SFLOAT, VK_FORMAT_R32G32B32A32_UINT}) {
            VkFormatProperties fp{};
            dev_.iapi().vkGetPhysicalDeviceFormatProperties(dev_.physical(), f, &fp);
            texel_reads_ = texel_reads_ && (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT);
        }
    }
    status_ = mem_.alloc(16, mem_kind::host);
    std::memset(status_.mapped(), 0, 16);
    log().debug("backend on {}: memory {}", dev_.name(), mem_.describe());
}

vk_backend::~vk_backend() {
    try {
        rec_.submit_and_wait();
    } catch (const std::exception& e) {
        log().error("pending work failed at shutdown: {}", e.what());
    }
    for (auto& a : deferred_) mem_.free(a);
    for (auto& a : scratch_) mem_.free(a);
    for (auto& [key, a] : rope_tables_) mem_.free(a);
    mem_.free(status_);
    mem_.set_block_release_hook({});
}

bool vk_backend::supports(op o, dtype t) const {
    switch (o) {
        case op::matmul_t:  // the frozen base weight read in its own format (ops/train_matmul.cpp)
        case op::get_rows:
        case op::matmul:  // quantized weights: ops/matmul_quant.cpp, ops/matmul_kquant.cpp, ops/elementwise.cpp
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

// ---- memory ----

allocation vk_backend::allocate(size_t bytes, bool zero) {
    allocation a = mem_.alloc(bytes, mem_kind::device);
    if (zero) {
        if (a.mapped()) {
            std::memset(a.mapped(), 0, a.size);  // fresh range: no pending command touches it
        } else {
            rec_.fill_zero(a.buffer(), a.offset, a.size);
        }
    }
    return a;
}

std::unique_ptr<buffer> vk_backend::alloc(size_t bytes) {
    return std::make_unique<vk_buffer>(*this, allocate(bytes, true), bytes);
}

std::unique_ptr<buffer> vk_backend::wrap_host(const void* data, size_t bytes) {
    auto b = std::make_unique<vk_buffer>(*this, allocate(bytes, false), bytes);
    write_buffer(b->alloc(), 0, data, bytes);
    return b;
}

void vk_backend::release(allocation a) {
    if (rec_.pending()) {
        deferred_.push_back(a);
    } else {
        mem_.free(a);
    }
}

const allocation& vk_backend::allocation_of(const buffer& b) const {
    const auto* vb = dynamic_cast<const vk_buffer*>(&b);
    if (!vb || &vb->owner() != this)
        throw error(TANDEM_ERR_INVALID_ARGUMENT,
                    "vulkan: a buffer of another backend was passed to the vulkan backend");
    return vb->alloc();
}

// Copies host data into a device range, in stream order: later ops see the new data, earlier ops the old.
void vk_backend::write_buffer(const allocation& a, size_t offset, const void* src, size_t bytes) {
    if (a.mapped()) {
        std::memcpy(a.mapped() + offset, src, bytes);
        return;
    }
    const auto* p = static_cast<const char*>(src);
    for (size_t done = 0; done < bytes;) {
        const size_t n = std::min<size_t>(bytes - done, k_staging_chunk);
        if (staged_bytes_ + n > k_staging_limit) flush();
        allocation st = mem_.alloc(n, mem_kind::host);
        std::memcpy(st.mapped(), p + done, n);
        rec_.copy(st.buffer(), st.offset, a.buffer(), a.offset + offset + done, n);
        deferred_.push_back(st);
        staged_bytes_ += st.size;
        done += n;
    }
}

void vk_backend::upload(buffer& dst, size_t offset, const void* src, size_t bytes) {
    const allocation& a = allocation_of(dst);
    if (offset > dst.size() || bytes > dst.size() - offset)
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "vulkan: upload past the end of a buffer");
    if (bytes == 0) return;
    dst.drop_layouts(offset, bytes);
    // Host-mapped memory is written by the CPU right now: earlier ops must have run first.
    if (a.mapped() && rec_.pending()) flush();
    write_buffer(a, offset, src, bytes);
}

void vk_backend::download(const buffer& src, size_t offset, void* dst, size_t bytes) {
    const allocation& a = allocation_of(src);
    if (offset > src.size() || bytes > src.size() - offset)
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "vulkan: download past the end of a buffer");
    if (a.mapped()) {
        flush();
        raise_pending();
        std::memcpy(dst, a.mapped() + offset, bytes);
        return;
    }
    auto* out = static_cast<char*>(dst);
    for (size_t done = 0; done < bytes;) {
        const size_t n = std::min<size_t>(bytes - done, k_staging_chunk);
        allocation st = mem_.alloc(n, mem_kind::host);
        rec_.copy(a.buffer(), a.offset + offset + done, st.buffer(), st.offset, n);
        try {
            flush();
        } catch (...) {
            mem_.free(st);
            throw;
        }
        if (!pending_errors_) std::memcpy(out + done, st.mapped(), n);
        mem_.free(st);  // nothing is pending after the flush
        raise_pending();
        done += n;
    }
    flush();
    raise_pending();
}

void vk_backend::synchronize() {
    flush();
    raise_pending();
}

void vk_backend::flush() {
    rec_.submit_and_wait();
    for (auto& a : deferred_) mem_.free(a);
    deferred_.clear();
    staged_bytes_ = 0;
    auto* word = reinterpret_cast<uint32_t*>(status_.mapped());
    if (*word) {
        pending_errors_ |= *word;
        *word = 0;
    }
    // Bound the descriptor-set cache (ops over ever-new ranges, e.g. tests); nothing is pending here.
    if (descriptors_.size() > 4096) descriptors_.clear();
}

void vk_backend::raise_pending() {
    if (!pending_errors_) return;
    std::string msg = "vulkan:";
    for (const auto& b : k_status_bits)
        if (pending_errors_ & b.bit) msg += std::string(" ") + b.what + ";";
    msg.pop_back();
    pending_errors_ = 0;
    throw error(TANDEM_ERR_INVALID_ARGUMENT, msg);
}

// ---- dispatch plumbing ----

view vk_backend::bind_rows(const tensor& t, int64_t row0, int64_t n_rows) const {
    const allocation& a = allocation_of(*t.buf);
    const uint32_t eb = elem_bytes(t.type);
    const VkDeviceSize base = a.offset + t.offset + VkDeviceSize(row0) * t.row_bytes();
    const VkDeviceSize bytes = VkDeviceSize(n_rows) * t.row_bytes();
    const VkDeviceSize align = dev_.limits().storage_align;
    const VkDeviceSize start = base / align * align;
    if ((base - start) % eb != 0) {
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: a " + std::string(dtype_name(t.type)) + " tensor at byte offset " +
                                                std::to_string(t.offset) + " is not aligned to its element size");
    }
    // Whole 32-bit words: f16 data is read as uint pairs (allocations are multiples of 256 bytes).
    const VkDeviceSize range = std::max<VkDeviceSize>(4, (base - start + bytes + 3) / 4 * 4);
    if (range > dev_.limits().max_storage_range) {
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: a tensor of " + std::to_string(bytes) +
                                                " bytes exceeds the device's maxStorageBufferRange of " +
                                                std::to_string(dev_.limits().max_storage_range));
    }
    view v;
    v.info = {a.buffer(), start, range};
    v.elem = uint32_t((base - start) / eb);
    return v;
}

view vk_backend::bind(const tensor& t) const { return bind_rows(t, 0, t.nrows()); }

int64_t vk_backend::max_bound_rows(const tensor& t) const {
    const VkDeviceSize usable = dev_.limits().max_storage_range - dev_.limits().storage_align - 4;
    return std::max<int64_t>(1, int64_t(usable / std::max<size_t>(1, t.row_bytes())));
}

arg vk_backend::status() const {
    arg s;
    s.v.info = {status_.buffer(), status_.offset, 16};
    s.write = true;
    s.tracked = false;
    return s;
}

view vk_backend::scratch(scratch_id which, VkDeviceSize bytes) {
    allocation& a = scratch_[which];
    if (!a || a.size < bytes) {
        if (a) release(a);
        a = allocate(size_t(std::max<VkDeviceSize>(bytes, 4096)), false);
    }
    view v;
    v.info = {a.buffer(), a.offset, std::max<VkDeviceSize>(4, (bytes + 3) / 4 * 4)};
    return v;
}

view vk_backend::rope_table(int32_t n_rot, float freq_base) {
    auto key = std::make_pair(n_rot, freq_base);
    auto it = rope_tables_.find(key);
    if (it == rope_tables_.end()) {
        // Exactly cpu_ref's expression, so theta = pos * inv_freq rounds the same way on both.
        std::vector<float> inv(size_t(std::max(1, n_rot / 2)), 0.f);
        for (int32_t i = 0; i < n_rot; i += 2) inv[size_t(i / 2)] = 1.f / std::pow(freq_base, float(i) / float(n_rot));
        allocation a = allocate(inv.size() * 4, false);
        write_buffer(a, 0, inv.data(), inv.size() * 4);
        it = rope_tables_.emplace(key, a).first;
    }
    view v;
    v.info = {it->second.buffer(), it->second.offset, VkDeviceSize(std::max(1, n_rot / 2)) * 4};
    return v;
}

groups vk_backend::grid(uint64_t n_groups) const {
    const uint64_t max_x = dev_.limits().max_group_count[0];
    if (n_groups <= max_x) return {uint32_t(n_groups), 1, 1};
    const uint64_t gy = (n_groups + max_x - 1) / max_x;
    if (gy > dev_.limits().max_group_count[1])
        throw error(TANDEM_ERR_UNSUPPORTED,
                    "vulkan: launch of " + std::to_string(n_groups) + " work-groups is too large");
    return {uint32_t(max_x), uint32_t(gy), 1};
}

std::vector<vk_backend::row_chunks> vk_backend::activation_chunks(int64_t m, int64_t chunk_m) const {
    if (m / chunk_m > dev_.limits().max_group_count[2])
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: matmul with too many activation rows for one dispatch");
    std::vector<row_chunks> parts;
    if (m >= chunk_m) parts.push_back({uint32_t(chunk_m), 0, uint32_t(m / chunk_m)});
    if (m % chunk_m) parts.push_back({uint32_t(m % chunk_m), uint32_t(m - m % chunk_m), 1});
    return parts;
}

uint32_t vk_backend::group_size(uint32_t want) const {
    const uint32_t cap = std::min(dev_.limits().max_invocations, dev_.limits().max_group_size[0]);
    uint32_t s = 1;
    while (s * 2 <= std::min(want, cap)) s *= 2;
    return s;
}

void vk_backend::record(const char* variant, std::initializer_list<uint32_t> spec, std::initializer_list<arg> args,
                        const void* push, uint32_t push_bytes, groups g) {
    if (g[0] == 0 || g[1] == 0 || g[2] == 0) return;
    for (int i = 0; i < 3; ++i) TANDEM_ASSERT(g[size_t(i)] <= dev_.limits().max_group_count[i]);
    constexpr size_t k_max_args = 8;
    TANDEM_ASSERT(args.size() <= k_max_args);
    VkDescriptorType types[k_max_args];
    binding_desc bindings[k_max_args];
    access acc[k_max_args];
    size_t n = 0, n_acc = 0;
    for (const arg& a : args) {
        const bool texel = a.texel != VK_FORMAT_UNDEFINED;
        types[n] = texel ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
        bindings[n].type = types[n];
        bindings[n].info = a.v.info;
        bindings[n].format = a.texel;
        ++n;
        if (a.tracked) acc[n_acc++] = {a.v.info.buffer, a.v.info.offset, a.v.info.range, a.write};
    }
    const pipeline& p = pipelines_.get(variant, std::span<const VkDescriptorType>(types, n),
                                       std::span<const uint32_t>(spec.begin(), spec.size()));
    const VkDescriptorSet set = descriptors_.get(p, std::span<const binding_desc>(bindings, n));
    rec_.dispatch(p, set, push, push_bytes, g[0], g[1], g[2], std::span<const access>(acc, n_acc));
}

arg vk_backend::texel_words(const view& v) const {
    TANDEM_ASSERT(texel_reads_);
    arg a;
    a.v = v;
    a.texel = VK_FORMAT_R32G32B32A32_UINT;
    // Whole texels covering the range: rounding up stays inside the allocation (a multiple of 256 bytes).
    a.v.info.range = (a.v.info.range + 15) / 16 * 16;
    if (a.v.info.range / 16 > dev_.limits().max_texel_elements)
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: a tensor exceeds the device's maxTexelBufferElements");
    return a;
}

arg vk_backend::texel(const view& v, dtype t, uint32_t lanes) const {
    const bool f16 = t == dtype::f16;
    TANDEM_ASSERT(texel_reads_ && (t == dtype::f32 || f16) && (lanes == 1 || lanes == 4 || (f16 && lanes == 8)));
    TANDEM_ASSERT(v.elem % lanes == 0);
    arg a;
    a.v = v;
    a.texel = lanes == 8   ? VK_FORMAT_R32G32B32A32_UINT  // 8 halves, unpacked by the shader
              : lanes == 4 ? (f16 ? VK_FORMAT_R16G16B16A16_SFLOAT : VK_FORMAT_R32G32B32A32_SFLOAT)
                           : (f16 ? VK_FORMAT_R16_SFLOAT : VK_FORMAT_R32_SFLOAT);
    // A texel view holds whole texels: trim the word padding bind() may add.
    const VkDeviceSize tb = (f16 ? 2 : 4) * lanes;
    a.v.info.range = std::max(tb, a.v.info.range / tb * tb);
    if (a.v.info.range / tb > dev_.limits().max_texel_elements)
        throw error(TANDEM_ERR_UNSUPPORTED, "vulkan: a tensor exceeds the device's maxTexelBufferElements");
    return a;
}

}  // namespace vk
}  // namespace tandem
