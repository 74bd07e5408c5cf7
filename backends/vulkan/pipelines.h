// Compute pipelines and descriptor sets, created lazily and cached: a pipeline per (shader variant, binding
// count, specialization constants), a descriptor set per (layout, bound buffer ranges). After the first forward
// pass every dispatch hits both caches, so per-token work is recording only (plan once per shape).
// The VkPipelineCache persists across runs in $TANDEM_CACHE_DIR, else $XDG_CACHE_HOME/tandem/vulkan, else
// ~/.cache/tandem/vulkan: written atomically (temp file + rename), checked on load (a corrupt file is ignored).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/vulkan/device.h"
#include "backends/vulkan/vk_handles.h"

namespace tandem::vk {

// Every pipeline layout has one push-constant range of this many bytes (the Vulkan minimum guarantee).
constexpr uint32_t k_push_bytes = 128;

struct pipeline {
    std::string variant;
    VkPipeline handle = VK_NULL_HANDLE;
    VkPipelineLayout layout = VK_NULL_HANDLE;
    VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
    uint32_t n_bindings = 0;
};

// One binding of a descriptor set: a storage buffer range, or a uniform texel buffer (a typed view of a range).
struct binding_desc {
    VkDescriptorType type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    VkDescriptorBufferInfo info{};
    VkFormat format = VK_FORMAT_UNDEFINED;  // texel buffers only
};

class pipeline_store {
 public:
    explicit pipeline_store(const device& dev);
    ~pipeline_store();  // saves the pipeline cache when it grew; never throws
    pipeline_store(const pipeline_store&) = delete;
    pipeline_store& operator=(const pipeline_store&) = delete;

    // The pipeline of `variant` with bindings 0..n-1 of set 0 of the given types (storage or uniform texel
    // buffers) and specialization constants spec[i] at constant_id i (constant 0 is the work-group size by
    // convention). Throws tandem::error naming the variant when the shader is unknown or the driver rejects it.
    const pipeline& get(const char* variant, std::span<const VkDescriptorType> types, std::span<const uint32_t> spec);
    std::string cache_path() const { return path_; }

 private:
    VkShaderModule module(const char* variant);
    void save() noexcept;

    const device& dev_;
    pipeline_cache_handle cache_;
    std::string path_;
    size_t loaded_bytes_ = 0;
    bool created_any_ = false;
    std::unordered_map<std::string, shader_module_handle> modules_;
    // Per list of binding types: the set layout and the pipeline layout.
    std::unordered_map<std::string, std::pair<set_layout_handle, pipeline_layout_handle>> layouts_;
    std::unordered_map<std::string, std::pair<pipeline_handle, std::unique_ptr<pipeline>>> pipelines_;
};

// Descriptor sets keyed by (set layout, bindings), and the buffer views of texel-buffer bindings. clear() may
// only run when no recorded or in-flight command buffer uses a set or a view.
class descriptor_cache {
 public:
    explicit descriptor_cache(const device& dev) : dev_(dev) {}
    ~descriptor_cache() { clear(); }
    descriptor_cache(const descriptor_cache&) = delete;
    descriptor_cache& operator=(const descriptor_cache&) = delete;
    VkDescriptorSet get(const pipeline& p, std::span<const binding_desc> bindings);
    void clear();
    size_t size() const { return sets_.size(); }

 private:
    VkBufferView view(const binding_desc& b);

    const device& dev_;
    std::vector<descriptor_pool_handle> pools_;
    uint32_t left_in_pool_ = 0;
    std::unordered_map<std::string, VkDescriptorSet> sets_;
    std::unordered_map<std::string, VkBufferView> views_;
};

}  // namespace tandem::vk
