// Lazy pipeline and descriptor-set caches, and the on-disk VkPipelineCache (see pipelines.h).
#include "backends/vulkan/pipelines.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "backends/backend.h"
#include "backends/vulkan/log.h"
#include "backends/vulkan/shader_table.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

constexpr char k_magic[8] = {'T', 'N', 'D', 'M', 'V', 'K', 'P', 'C'};
constexpr size_t k_header_bytes = 32;  // magic, u32 format, u32 reserved, u64 payload bytes, u64 FNV-1a

uint64_t fnv1a(const uint8_t* p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

std::string cache_dir() {
    if (const char* d = std::getenv("TANDEM_CACHE_DIR"); d && *d) return d;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/tandem/vulkan";
    if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/tandem/vulkan";
    return "";
}

// The stored VkPipelineCache data when the file is intact and was written for this very device and driver.
std::vector<uint8_t> load_cache_file(const std::string& path, const VkPhysicalDeviceProperties& props) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {};
    std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto u32 = [&](size_t at) {
        uint32_t v;
        std::memcpy(&v, file.data() + at, 4);
        return v;
    };
    auto u64 = [&](size_t at) {
        uint64_t v;
        std::memcpy(&v, file.data() + at, 8);
        return v;
    };
    if (file.size() < k_header_bytes + 32 || std::memcmp(file.data(), k_magic, 8) != 0 || u32(8) != 1 ||
        u64(16) != file.size() - k_header_bytes ||
        u64(24) != fnv1a(file.data() + k_header_bytes, file.size() - k_header_bytes)) {
        log().warn("ignoring corrupt pipeline cache {}", path);
        return {};
    }
    std::vector<uint8_t> data(file.begin() + k_header_bytes, file.end());
    // VkPipelineCacheHeaderVersionOne: size, version, vendor, device, UUID.
    uint32_t hdr[4];
    std::memcpy(hdr, data.data(), 16);
    if (hdr[0] < 32 || hdr[1] != VK_PIPELINE_CACHE_HEADER_VERSION_ONE || hdr[2] != props.vendorID ||
        hdr[3] != props.deviceID || std::memcmp(data.data() + 16, props.pipelineCacheUUID, VK_UUID_SIZE) != 0) {
        log().debug("pipeline cache {} is for another device or driver; ignoring it", path);
        return {};
    }
    return data;
}

}  // namespace

pipeline_store::pipeline_store(const device& dev) : dev_(dev) {
    const auto& props = dev.properties();
    const std::string dir = cache_dir();
    if (!dir.empty()) {
        char name[96];
        std::snprintf(name, sizeof name, "/pipelines-%04x-%04x-%08x.bin", props.vendorID, props.deviceID,
                      props.driverVersion);
        path_ = dir + name;
    }
    std::vector<uint8_t> data;
    if (!path_.empty()) data = load_cache_file(path_, props);
    auto ci = make<VkPipelineCacheCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO);
    ci.initialDataSize = data.size();
    ci.pInitialData = data.empty() ? nullptr : data.data();
    VkPipelineCache c = VK_NULL_HANDLE;
    VkResult r = dev.api().vkCreatePipelineCache(dev.get(), &ci, nullptr, &c);
    if (r != VK_SUCCESS && !data.empty()) {  // the driver refused the stored data: start empty
        ci.initialDataSize = 0;
        ci.pInitialData = nullptr;
        r = dev.api().vkCreatePipelineCache(dev.get(), &ci, nullptr, &c);
    }
    check(r, "vkCreatePipelineCache");
    cache_ = pipeline_cache_handle(dev.get(), c, dev.api().vkDestroyPipelineCache);
    loaded_bytes_ = data.size();
}

pipeline_store::~pipeline_store() {
    if (created_any_) save();
}

void pipeline_store::save() noexcept {
    if (path_.empty()) return;
    try {
        size_t n = 0;
        if (dev_.api().vkGetPipelineCacheData(dev_.get(), cache_.get(), &n, nullptr) != VK_SUCCESS || n == 0) return;
        std::vector<uint8_t> file(k_header_bytes + n);
        if (dev_.api().vkGetPipelineCacheData(dev_.get(), cache_.get(), &n, file.data() + k_header_bytes) != VK_SUCCESS)
            return;
        file.resize(k_header_bytes + n);
        const uint32_t format = 1, reserved = 0;
        const uint64_t bytes = n, hash = fnv1a(file.data() + k_header_bytes, n);
        std::memcpy(file.data(), k_magic, 8);
        std::memcpy(file.data() + 8, &format, 4);
        std::memcpy(file.data() + 12, &reserved, 4);
        std::memcpy(file.data() + 16, &bytes, 8);
        std::memcpy(file.data() + 24, &hash, 8);
        const std::filesystem::path p(path_);
        std::error_code ec;
        std::filesystem::create_directories(p.parent_path(), ec);
        const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            if (!out) return;
            out.write(reinterpret_cast<const char*>(file.data()), std::streamsize(file.size()));
            if (!out.flush()) {
                std::filesystem::remove(tmp, ec);
                return;
            }
        }
        std::filesystem::rename(tmp, p, ec);  // atomic on POSIX: readers see the old or the new file
        if (ec) std::filesystem::remove(tmp, ec);
    } catch (...) {
        // A cache that cannot be written only costs compile time on the next run.
    }
}

VkShaderModule pipeline_store::module(const char* variant) {
    auto it = modules_.find(variant);
    if (it != modules_.end()) return it->second.get();
    const shader_variant* sv = nullptr;
    for (const auto& v : shader_variants())
        if (std::strcmp(v.name, variant) == 0) sv = &v;
    if (!sv) throw error(TANDEM_ERR_INTERNAL, std::string("vulkan: no shader variant ") + variant + " in this build");
    auto ci = make<VkShaderModuleCreateInfo>(VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO);
    ci.codeSize = sv->bytes;
    ci.pCode = sv->code;
    VkShaderModule m = VK_NULL_HANDLE;
    check(dev_.api().vkCreateShaderModule(dev_.get(), &ci, nullptr, &m), std::string("shader module ") + variant);
    return modules_.emplace(variant, shader_module_handle(dev_.get(), m, dev_.api().vkDestroyShaderModule))
        .first->second.get();
}

const pipeline& pipeline_store::get(const char* variant, std::span<const VkDescriptorType> types,
                                    std::span<const uint32_t> spec) {
    const uint32_t n_bindings = uint32_t(types.size());
    const std::string type_key(reinterpret_cast<const char*>(types.data()), types.size_bytes());
    std::string key(variant);
    key.push_back('\0');
    key += type_key;
    key.append(reinterpret_cast<const char*>(spec.data()), spec.size_bytes());
    if (auto it = pipelines_.find(key); it != pipelines_.end()) return *it->second.second;

    const auto& api = dev_.api();
    auto& layout = layouts_[type_key];
    if (!layout.first) {
        std::vector<VkDescriptorSetLayoutBinding> b(n_bindings);
        for (uint32_t i = 0; i < n_bindings; ++i) b[i] = {i, types[i], 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
        auto li = make<VkDescriptorSetLayoutCreateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO);
        li.bindingCount = n_bindings;
        li.pBindings = b.data();
        VkDescriptorSetLayout sl = VK_NULL_HANDLE;
        check(api.vkCreateDescriptorSetLayout(dev_.get(), &li, nullptr, &sl), "vkCreateDescriptorSetLayout");
        layout.first = set_layout_handle(dev_.get(), sl, api.vkDestroyDescriptorSetLayout);
        VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, k_push_bytes};
        auto pi = make<VkPipelineLayoutCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO);
        pi.setLayoutCount = 1;
        pi.pSetLayouts = &sl;
        pi.pushConstantRangeCount = 1;
        pi.pPushConstantRanges = &pr;
        VkPipelineLayout pl = VK_NULL_HANDLE;
        check(api.vkCreatePipelineLayout(dev_.get(), &pi, nullptr, &pl), "vkCreatePipelineLayout");
        layout.second = pipeline_layout_handle(dev_.get(), pl, api.vkDestroyPipelineLayout);
    }

    std::vector<VkSpecializationMapEntry> entries(spec.size());
    for (uint32_t i = 0; i < spec.size(); ++i) entries[i] = {i, i * 4, 4};
    VkSpecializationInfo si{uint32_t(entries.size()), entries.data(), spec.size_bytes(), spec.data()};
    auto ci = make<VkComputePipelineCreateInfo>(VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO);
    ci.stage = make<VkPipelineShaderStageCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO);
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = module(variant);
    ci.stage.pName = "main";
    ci.stage.pSpecializationInfo = spec.empty() ? nullptr : &si;
    ci.layout = layout.second.get();
    VkPipeline p = VK_NULL_HANDLE;
    std::string what = std::string("pipeline ") + variant + " (spec";
    for (uint32_t v : spec) {
        what += ' ';
        what += std::to_string(v);
    }
    what += ")";
    if (kernel_failure_forced(variant)) check(VK_ERROR_INITIALIZATION_FAILED, what + " [failure forced by TANDEM_FAIL_KERNELS]");
    check(api.vkCreateComputePipelines(dev_.get(), cache_.get(), 1, &ci, nullptr, &p), what);
    created_any_ = true;
    auto info = std::make_unique<pipeline>();
    info->variant = variant;
    info->handle = p;
    info->layout = layout.second.get();
    info->set_layout = layout.first.get();
    info->n_bindings = n_bindings;
    log().debug("created {}", what);
    auto& slot = pipelines_[key];
    slot = {pipeline_handle(dev_.get(), p, api.vkDestroyPipeline), std::move(info)};
    return *slot.second;
}

namespace {

// Appends the fields of b (not its padding) to a cache key.
void append_key(std::string& key, const binding_desc& b) {
    key.append(reinterpret_cast<const char*>(&b.type), sizeof(b.type));
    key.append(reinterpret_cast<const char*>(&b.info), sizeof(b.info));  // three 64-bit fields
    key.append(reinterpret_cast<const char*>(&b.format), sizeof(b.format));
}

}  // namespace

VkBufferView descriptor_cache::view(const binding_desc& b) {
    std::string key;
    append_key(key, b);
    if (auto it = views_.find(key); it != views_.end()) return it->second;
    auto ci = make<VkBufferViewCreateInfo>(VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO);
    ci.buffer = b.info.buffer;
    ci.format = b.format;
    ci.offset = b.info.offset;
    ci.range = b.info.range;
    VkBufferView v = VK_NULL_HANDLE;
    check(dev_.api().vkCreateBufferView(dev_.get(), &ci, nullptr, &v), "vkCreateBufferView");
    views_.emplace(std::move(key), v);
    return v;
}

VkDescriptorSet descriptor_cache::get(const pipeline& p, std::span<const binding_desc> bindings) {
    std::string key(reinterpret_cast<const char*>(&p.set_layout), sizeof(p.set_layout));
    for (const auto& b : bindings) append_key(key, b);
    if (auto it = sets_.find(key); it != sets_.end()) return it->second;

    const auto& api = dev_.api();
    constexpr uint32_t k_sets_per_pool = 256, k_per_set = 8;
    if (left_in_pool_ == 0 || bindings.size() > k_per_set) {
        const uint32_t n = k_sets_per_pool * std::max<uint32_t>(k_per_set, uint32_t(bindings.size()));
        const VkDescriptorPoolSize ps[2] = {{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, n},
                                            {VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, n}};
        auto ci = make<VkDescriptorPoolCreateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO);
        ci.maxSets = k_sets_per_pool;
        ci.poolSizeCount = 2;
        ci.pPoolSizes = ps;
        VkDescriptorPool pool = VK_NULL_HANDLE;
        check(api.vkCreateDescriptorPool(dev_.get(), &ci, nullptr, &pool), "vkCreateDescriptorPool");
        pools_.emplace_back(dev_.get(), pool, api.vkDestroyDescriptorPool);
        left_in_pool_ = k_sets_per_pool;
    }
    auto ai = make<VkDescriptorSetAllocateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO);
    ai.descriptorPool = pools_.back().get();
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &p.set_layout;
    VkDescriptorSet set = VK_NULL_HANDLE;
    check(api.vkAllocateDescriptorSets(dev_.get(), &ai, &set), "vkAllocateDescriptorSets");
    --left_in_pool_;
    std::vector<VkWriteDescriptorSet> writes(bindings.size());
    std::vector<VkBufferView> views(bindings.size(), VK_NULL_HANDLE);
    for (size_t i = 0; i < bindings.size(); ++i) {
        writes[i] = make<VkWriteDescriptorSet>(VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET);
        writes[i].dstSet = set;
        writes[i].dstBinding = uint32_t(i);
        writes[i].descriptorCount = 1;
        writes[i].descriptorType = bindings[i].type;
        if (bindings[i].type == VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER) {
            views[i] = view(bindings[i]);
            writes[i].pTexelBufferView = &views[i];
        } else {
            writes[i].pBufferInfo = &bindings[i].info;
        }
    }
    api.vkUpdateDescriptorSets(dev_.get(), uint32_t(writes.size()), writes.data(), 0, nullptr);
    sets_.emplace(std::move(key), set);
    return set;
}

void descriptor_cache::clear() {
    sets_.clear();
    pools_.clear();
    left_in_pool_ = 0;
    for (auto& [key, v] : views_) dev_.api().vkDestroyBufferView(dev_.get(), v, nullptr);
    views_.clear();
}

}  // namespace tandem::vk
