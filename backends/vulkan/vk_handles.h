// Thin move-only RAII owners for Vulkan handles: one template for every device-level object destroyed by
// vkDestroyX(device, handle, nullptr) (buffers, memory, pipelines, pools, fences, ...). The owner keeps the
// device and the destroy function, so objects can be held in containers and moved around freely.
#pragma once

#include <utility>

#include "backends/vulkan/vk_api.h"

namespace tandem::vk {

template <typename H>
class handle {
 public:
    using destroy_fn = void(VKAPI_PTR*)(VkDevice, H, const VkAllocationCallbacks*);

    handle() = default;
    handle(VkDevice device, H h, destroy_fn destroy) : device_(device), h_(h), destroy_(destroy) {}
    ~handle() { reset(); }
    handle(handle&& o) noexcept
        : device_(o.device_), h_(std::exchange(o.h_, H(VK_NULL_HANDLE))), destroy_(o.destroy_) {}
    handle& operator=(handle&& o) noexcept {
        if (this != &o) {
            reset();
            device_ = o.device_;
            h_ = std::exchange(o.h_, H(VK_NULL_HANDLE));
            destroy_ = o.destroy_;
        }
        return *this;
    }
    handle(const handle&) = delete;
    handle& operator=(const handle&) = delete;

    H get() const { return h_; }
    explicit operator bool() const { return h_ != H(VK_NULL_HANDLE); }
    void reset() {
        if (h_ != H(VK_NULL_HANDLE) && destroy_) destroy_(device_, h_, nullptr);
        h_ = H(VK_NULL_HANDLE);
    }

 private:
    VkDevice device_ = VK_NULL_HANDLE;
    H h_ = H(VK_NULL_HANDLE);
    destroy_fn destroy_ = nullptr;
};

using buffer_handle = handle<VkBuffer>;
using memory_handle = handle<VkDeviceMemory>;
using shader_module_handle = handle<VkShaderModule>;
using pipeline_handle = handle<VkPipeline>;
using pipeline_layout_handle = handle<VkPipelineLayout>;
using pipeline_cache_handle = handle<VkPipelineCache>;
using set_layout_handle = handle<VkDescriptorSetLayout>;
using descriptor_pool_handle = handle<VkDescriptorPool>;
using command_pool_handle = handle<VkCommandPool>;
using fence_handle = handle<VkFence>;
using query_pool_handle = handle<VkQueryPool>;

}  // namespace tandem::vk
