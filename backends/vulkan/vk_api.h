// The Vulkan API as a table of function pointers, loaded at run time from the loader (libvulkan.so.1), so
// that a machine without Vulkan gets a clear tandem::error instead of a binary that does not start.
// Device-level functions are fetched with vkGetDeviceProcAddr (no loader trampoline on the dispatch path).
#pragma once

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <string>

namespace tandem::vk {

// clang-format off
#define TANDEM_VK_GLOBAL_FUNCTIONS(X) \
    X(vkCreateInstance) \
    X(vkEnumerateInstanceExtensionProperties) \
    X(vkEnumerateInstanceLayerProperties) \
    X(vkEnumerateInstanceVersion)

#define TANDEM_VK_INSTANCE_FUNCTIONS(X) \
    X(vkDestroyInstance) \
    X(vkEnumeratePhysicalDevices) \
    X(vkGetPhysicalDeviceProperties) \
    X(vkGetPhysicalDeviceProperties2) \
    X(vkGetPhysicalDeviceFeatures) \
    X(vkGetPhysicalDeviceMemoryProperties) \
    X(vkGetPhysicalDeviceQueueFamilyProperties) \
    X(vkGetPhysicalDeviceFormatProperties) \
    X(vkEnumerateDeviceExtensionProperties) \
    X(vkCreateDevice) \
    X(vkGetDeviceProcAddr)

#define TANDEM_VK_DEVICE_FUNCTIONS(X) \
    X(vkDestroyDevice) \
    X(vkGetDeviceQueue) \
    X(vkDeviceWaitIdle) \
    X(vkQueueSubmit) \
    X(vkCreateBuffer) \
    X(vkDestroyBuffer) \
    X(vkCreateBufferView) \
    X(vkDestroyBufferView) \
    X(vkGetBufferMemoryRequirements) \
    X(vkAllocateMemory) \
    X(vkFreeMemory) \
    X(vkBindBufferMemory) \
    X(vkMapMemory) \
    X(vkUnmapMemory) \
    X(vkCreateShaderModule) \
    X(vkDestroyShaderModule) \
    X(vkCreatePipelineCache) \
    X(vkDestroyPipelineCache) \
    X(vkGetPipelineCacheData) \
    X(vkCreateComputePipelines) \
    X(vkDestroyPipeline) \
    X(vkCreatePipelineLayout) \
    X(vkDestroyPipelineLayout) \
    X(vkCreateDescriptorSetLayout) \
    X(vkDestroyDescriptorSetLayout) \
    X(vkCreateDescriptorPool) \
    X(vkDestroyDescriptorPool) \
    X(vkResetDescriptorPool) \
    X(vkAllocateDescriptorSets) \
    X(vkUpdateDescriptorSets) \
    X(vkCreateCommandPool) \
    X(vkDestroyCommandPool) \
    X(vkAllocateCommandBuffers) \
    X(vkResetCommandBuffer) \
    X(vkBeginCommandBuffer) \
    X(vkEndCommandBuffer) \
    X(vkCmdBindPipeline) \
    X(vkCmdBindDescriptorSets) \
    X(vkCmdPushConstants) \
    X(vkCmdDispatch) \
    X(vkCmdPipelineBarrier) \
    X(vkCmdCopyBuffer) \
    X(vkCmdFillBuffer) \
    X(vkCreateFence) \
    X(vkDestroyFence) \
    X(vkWaitForFences) \
    X(vkResetFences) \
    X(vkCreateQueryPool) \
    X(vkDestroyQueryPool) \
    X(vkCmdResetQueryPool) \
    X(vkCmdWriteTimestamp) \
    X(vkGetQueryPoolResults)

// clang-format on

#define TANDEM_VK_DECLARE(name) PFN_##name name = nullptr;

// Global and instance-level entry points of one VkInstance.
struct instance_api {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
    TANDEM_VK_GLOBAL_FUNCTIONS(TANDEM_VK_DECLARE)
    TANDEM_VK_INSTANCE_FUNCTIONS(TANDEM_VK_DECLARE)
    // VK_EXT_debug_utils, present only when the validation messenger is requested.
    PFN_vkCreateDebugUtilsMessengerEXT vkCreateDebugUtilsMessengerEXT = nullptr;
    PFN_vkDestroyDebugUtilsMessengerEXT vkDestroyDebugUtilsMessengerEXT = nullptr;
};

// Device-level entry points of one VkDevice.
struct device_api {
    TANDEM_VK_DEVICE_FUNCTIONS(TANDEM_VK_DECLARE)
};

#undef TANDEM_VK_DECLARE

// Opens the loader once per process and fills the global entry points; throws tandem::error(TANDEM_ERR_BACKEND)
// naming the packages to install when there is no loader.
instance_api load_global_api();
// Fills the instance-level entry points (and the debug-utils ones when present).
void load_instance_api(instance_api& api, VkInstance instance);
// Fills the device-level entry points; throws when one is missing.
device_api load_device_api(const instance_api& api, VkDevice device);

// A zero-initialised Vulkan struct with its sType set.
template <typename T>
T make(VkStructureType type) {
    T v{};
    v.sType = type;
    return v;
}

const char* result_name(VkResult r);
// Throws tandem::error(TANDEM_ERR_BACKEND, "<what>: <VkResult>") unless r is VK_SUCCESS.
void check(VkResult r, const std::string& what);

}  // namespace tandem::vk
