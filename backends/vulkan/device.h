// The Vulkan instance, the chosen physical device and its logical device with one compute queue.
// Selection: an explicit selector ("vulkan:<index>" / "vulkan:<name substring>"), else env TANDEM_VULKAN_DEVICE,
// else the first discrete GPU, else the first integrated GPU, else the first device. Env
// TANDEM_VULKAN_VALIDATION=1 enables VK_LAYER_KHRONOS_validation with a debug-utils messenger that counts errors.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "backends/vulkan/vk_api.h"

namespace tandem::vk {

// The device limits the launchers plan with.
struct device_limits {
    uint32_t subgroup_size = 1;
    uint32_t max_invocations = 128;  // maxComputeWorkGroupInvocations
    uint32_t max_group_size[3] = {128, 128, 64};
    uint32_t max_group_count[3] = {65535, 65535, 65535};
    uint32_t max_shared_bytes = 16384;
    uint32_t max_push_bytes = 128;
    VkDeviceSize max_storage_range = 1u << 27;  // maxStorageBufferRange: one binding never exceeds it
    VkDeviceSize storage_align = 256;           // max(minStorageBufferOffsetAlignment, minTexelBufferOffsetAlignment)
    uint64_t max_texel_elements = 65536;        // maxTexelBufferElements
    VkDeviceSize max_allocation = 1u << 30;
    double timestamp_period_ns = 1;
    uint32_t timestamp_bits = 0;  // 0: the queue cannot write timestamps
    // Mesa's llvmpipe (lavapipe) stops a shader invocation after 65,535 loop iterations in total
    // (LP_MAX_TGSI_LOOP_ITERATIONS) without an error: launchers must split long loops on it.
    bool loop_limited = false;
};

// Errors reported by the validation layer since the process started (every device counts into it).
extern std::atomic<uint64_t> g_validation_errors;
bool validation_layer_available();

// A Vulkan instance (with the validation messenger when requested). Move-only owner.
class instance {
 public:
    explicit instance(bool validation);
    ~instance();
    instance(const instance&) = delete;
    instance& operator=(const instance&) = delete;

    const instance_api& api() const { return api_; }
    VkInstance get() const { return instance_; }

 private:
    instance_api api_;
    VkInstance instance_ = VK_NULL_HANDLE;
    VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
};

class device {
 public:
    explicit device(const std::string& selector);
    ~device();
    device(const device&) = delete;
    device& operator=(const device&) = delete;

    const device_api& api() const { return api_; }
    const instance_api& iapi() const { return instance_.api(); }
    VkDevice get() const { return device_; }
    VkPhysicalDevice physical() const { return physical_; }
    VkQueue queue() const { return queue_; }
    uint32_t queue_family() const { return queue_family_; }
    const VkPhysicalDeviceProperties& properties() const { return props_; }
    const VkPhysicalDeviceMemoryProperties& memory_properties() const { return memory_; }
    const device_limits& limits() const { return limits_; }
    std::string name() const { return props_.deviceName; }
    std::string describe() const;  // "device INDEX: NAME (TYPE, Vulkan X.Y.Z)"
    int index() const { return index_; }

 private:
    instance instance_;
    VkPhysicalDevice physical_ = VK_NULL_HANDLE;
    int index_ = 0;
    VkPhysicalDeviceProperties props_{};
    VkPhysicalDeviceMemoryProperties memory_{};
    device_limits limits_;
    VkDevice device_ = VK_NULL_HANDLE;
    device_api api_;
    uint32_t queue_family_ = 0;
    VkQueue queue_ = VK_NULL_HANDLE;
};

// One line per device (index, name, type, API, driver, subgroup size, memory), for `tandem devices`.
std::string devices_report();

}  // namespace tandem::vk
