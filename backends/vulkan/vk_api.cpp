// Loads the Vulkan loader with dlopen and fills the function tables of vk_api.h.
#include "backends/vulkan/vk_api.h"

#include <dlfcn.h>

#include <mutex>

#include "engine/error.h"

namespace tandem::vk {

namespace {

PFN_vkGetInstanceProcAddr open_loader() {
    static std::once_flag once;
    static PFN_vkGetInstanceProcAddr gipa = nullptr;
    std::call_once(once, [] {
        // Never dlclose'd: function pointers taken from it live as long as the process.
        void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!lib) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
        if (lib) gipa = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
    });
    if (!gipa) {
        throw error(TANDEM_ERR_BACKEND,
                    "vulkan: no Vulkan loader (libvulkan.so.1) on this machine; install libvulkan1 and a driver, "
                    "e.g. mesa-vulkan-drivers (CPU: lavapipe) or your GPU vendor's driver");
    }
    return gipa;
}

}  // namespace

instance_api load_global_api() {
    instance_api api;
    api.vkGetInstanceProcAddr = open_loader();
#define TANDEM_VK_LOAD(name) api.name = reinterpret_cast<PFN_##name>(api.vkGetInstanceProcAddr(nullptr, #name));
    TANDEM_VK_GLOBAL_FUNCTIONS(TANDEM_VK_LOAD)
#undef TANDEM_VK_LOAD
    if (!api.vkCreateInstance || !api.vkEnumerateInstanceExtensionProperties ||
        !api.vkEnumerateInstanceLayerProperties) {
        throw error(TANDEM_ERR_BACKEND, "vulkan: the Vulkan loader is incomplete (no vkCreateInstance)");
    }
    return api;
}

void load_instance_api(instance_api& api, VkInstance instance) {
#define TANDEM_VK_LOAD(name)                                                             \
    api.name = reinterpret_cast<PFN_##name>(api.vkGetInstanceProcAddr(instance, #name)); \
    if (!api.name) throw error(TANDEM_ERR_BACKEND, "vulkan: the loader has no " #name);
    TANDEM_VK_INSTANCE_FUNCTIONS(TANDEM_VK_LOAD)
#undef TANDEM_VK_LOAD
    api.vkCreateDebugUtilsMessengerEXT = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
        api.vkGetInstanceProcAddr(instance, "vkCreateDebugUtilsMessengerEXT"));
    api.vkDestroyDebugUtilsMessengerEXT = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        api.vkGetInstanceProcAddr(instance, "vkDestroyDebugUtilsMessengerEXT"));
}

device_api load_device_api(const instance_api& api, VkDevice device) {
    device_api d;
#define TANDEM_VK_LOAD(name)                                                       \
    d.name = reinterpret_cast<PFN_##name>(api.vkGetDeviceProcAddr(device, #name)); \
    if (!d.name) throw error(TANDEM_ERR_BACKEND, "vulkan: the driver has no " #name);
    TANDEM_VK_DEVICE_FUNCTIONS(TANDEM_VK_LOAD)
#undef TANDEM_VK_LOAD
    return d;
}

const char* result_name(VkResult r) {
    switch (r) {
        case VK_SUCCESS:
            return "VK_SUCCESS";
        case VK_NOT_READY:
            return "VK_NOT_READY";
        case VK_TIMEOUT:
            return "VK_TIMEOUT";
        case VK_INCOMPLETE:
            return "VK_INCOMPLETE";
        case VK_ERROR_OUT_OF_HOST_MEMORY:
            return "VK_ERROR_OUT_OF_HOST_MEMORY";
        case VK_ERROR_OUT_OF_DEVICE_MEMORY:
            return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
        case VK_ERROR_INITIALIZATION_FAILED:
            return "VK_ERROR_INITIALIZATION_FAILED";
        case VK_ERROR_DEVICE_LOST:
            return "VK_ERROR_DEVICE_LOST";
        case VK_ERROR_MEMORY_MAP_FAILED:
            return "VK_ERROR_MEMORY_MAP_FAILED";
        case VK_ERROR_LAYER_NOT_PRESENT:
            return "VK_ERROR_LAYER_NOT_PRESENT";
        case VK_ERROR_EXTENSION_NOT_PRESENT:
            return "VK_ERROR_EXTENSION_NOT_PRESENT";
        case VK_ERROR_FEATURE_NOT_PRESENT:
            return "VK_ERROR_FEATURE_NOT_PRESENT";
        case VK_ERROR_INCOMPATIBLE_DRIVER:
            return "VK_ERROR_INCOMPATIBLE_DRIVER";
        case VK_ERROR_TOO_MANY_OBJECTS:
            return "VK_ERROR_TOO_MANY_OBJECTS";
        case VK_ERROR_FORMAT_NOT_SUPPORTED:
            return "VK_ERROR_FORMAT_NOT_SUPPORTED";
        case VK_ERROR_FRAGMENTED_POOL:
            return "VK_ERROR_FRAGMENTED_POOL";
        case VK_ERROR_OUT_OF_POOL_MEMORY:
            return "VK_ERROR_OUT_OF_POOL_MEMORY";
        case VK_ERROR_INVALID_SHADER_NV:
            return "VK_ERROR_INVALID_SHADER_NV";
        default:
            return "VkResult error";
    }
}

void check(VkResult r, const std::string& what) {
    if (r != VK_SUCCESS) {
        throw error(TANDEM_ERR_BACKEND,
                    "vulkan: " + what + " failed: " + result_name(r) + " (" + std::to_string(int(r)) + ")");
    }
}

}  // namespace tandem::vk
