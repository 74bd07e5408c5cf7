// Instance creation (validation layer + messenger on request), physical-device selection, the logical device
// with one compute queue, the device limits the launchers plan with, and the `tandem devices` report.
#include "backends/vulkan/device.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "backends/vulkan/log.h"
#include "engine/error.h"

namespace tandem::vk {

std::atomic<uint64_t> g_validation_errors{0};

namespace {

constexpr const char* k_validation_layer = "VK_LAYER_KHRONOS_validation";
constexpr const char* k_install_hint = "install a Vulkan driver, e.g. mesa-vulkan-drivers (lavapipe, a CPU device)";

bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v && *v && std::strcmp(v, "0") != 0;
}

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                     VkDebugUtilsMessageTypeFlagsEXT,
                                                     const VkDebugUtilsMessengerCallbackDataEXT* data, void*) {
    const char* msg = data && data->pMessage ? data->pMessage : "(no message)";
    if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        g_validation_errors.fetch_add(1);
        log().error("validation: {}", msg);
    } else if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        log().warn("validation: {}", msg);
    }
    return VK_FALSE;
}

std::vector<VkPhysicalDevice> physical_devices(const instance& inst) {
    uint32_t n = 0;
    check(inst.api().vkEnumeratePhysicalDevices(inst.get(), &n, nullptr), "vkEnumeratePhysicalDevices");
    std::vector<VkPhysicalDevice> devs(n);
    if (n) check(inst.api().vkEnumeratePhysicalDevices(inst.get(), &n, devs.data()), "vkEnumeratePhysicalDevices");
    devs.resize(n);
    return devs;
}

const char* type_name(VkPhysicalDeviceType t) {
    switch (t) {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
            return "discrete GPU";
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
            return "integrated GPU";
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
            return "virtual GPU";
        case VK_PHYSICAL_DEVICE_TYPE_CPU:
            return "CPU";
        default:
            return "other";
    }
}

std::string lower(std::string s) {
    for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// The default device: the first discrete GPU, else the first integrated GPU, else device 0.
int default_device(const instance& inst, const std::vector<VkPhysicalDevice>& devs) {
    for (VkPhysicalDeviceType want : {VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU, VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU}) {
        for (size_t i = 0; i < devs.size(); ++i) {
            VkPhysicalDeviceProperties p;
            inst.api().vkGetPhysicalDeviceProperties(devs[i], &p);
            if (p.deviceType == want) return int(i);
        }
    }
    return 0;
}

std::string device_list(const instance& inst, const std::vector<VkPhysicalDevice>& devs) {
    std::string s;
    for (size_t i = 0; i < devs.size(); ++i) {
        VkPhysicalDeviceProperties p;
        inst.api().vkGetPhysicalDeviceProperties(devs[i], &p);
        s += (i ? ", " : "") + std::to_string(i) + ": " + p.deviceName;
    }
    return s;
}

int select_device(const instance& inst, const std::vector<VkPhysicalDevice>& devs, const std::string& selector) {
    if (selector.empty()) return default_device(inst, devs);
    if (std::all_of(selector.begin(), selector.end(),
                    [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
        const long idx = std::strtol(selector.c_str(), nullptr, 10);
        if (idx >= 0 && idx < long(devs.size())) return int(idx);
        throw error(TANDEM_ERR_INVALID_ARGUMENT,
                    "vulkan: no device with index " + selector + " (devices: " + device_list(inst, devs) + ")");
    }
    const std::string want = lower(selector);
    for (size_t i = 0; i < devs.size(); ++i) {
        VkPhysicalDeviceProperties p;
        inst.api().vkGetPhysicalDeviceProperties(devs[i], &p);
        if (lower(p.deviceName).find(want) != std::string::npos) return int(i);
    }
    throw error(TANDEM_ERR_INVALID_ARGUMENT,
                "vulkan: no device name contains '" + selector + "' (devices: " + device_list(inst, devs) + ")");
}

std::string version_string(uint32_t v) {
    return std::to_string(VK_API_VERSION_MAJOR(v)) + "." + std::to_string(VK_API_VERSION_MINOR(v)) + "." +
           std::to_string(VK_API_VERSION_PATCH(v));
}

}  // namespace

bool validation_layer_available() {
    try {
        const instance_api api = load_global_api();
        uint32_t n = 0;
        if (api.vkEnumerateInstanceLayerProperties(&n, nullptr) != VK_SUCCESS) return false;
        std::vector<VkLayerProperties> layers(n);
        if (api.vkEnumerateInstanceLayerProperties(&n, layers.data()) != VK_SUCCESS) return false;
        for (uint32_t i = 0; i < n; ++i)
            if (std::strcmp(layers[i].layerName, k_validation_layer) == 0) return true;
    } catch (const error&) {
    }
    return false;
}

instance::instance(bool validation) : api_(load_global_api()) {
    uint32_t version = VK_API_VERSION_1_0;
    if (api_.vkEnumerateInstanceVersion) api_.vkEnumerateInstanceVersion(&version);
    if (version < VK_API_VERSION_1_1) {
        throw error(TANDEM_ERR_BACKEND, "vulkan: the loader supports Vulkan " + version_string(version) +
                                            "; Tandem needs 1.1 (update libvulkan1)");
    }
    uint32_t n_ext = 0;
    api_.vkEnumerateInstanceExtensionProperties(nullptr, &n_ext, nullptr);
    std::vector<VkExtensionProperties> exts(n_ext);
    api_.vkEnumerateInstanceExtensionProperties(nullptr, &n_ext, exts.data());
    auto has_ext = [&](const char* name) {
        return std::any_of(exts.begin(), exts.end(),
                           [&](const auto& e) { return std::strcmp(e.extensionName, name) == 0; });
    };
    std::vector<const char*> enabled_exts, layers;
    VkInstanceCreateFlags flags = 0;
    // Portability drivers (MoltenVK) are only listed when the application opts in.
    if (has_ext(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
        enabled_exts.push_back(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
        flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
    if (validation) {
        if (!validation_layer_available()) {
            throw error(TANDEM_ERR_BACKEND, std::string("vulkan: TANDEM_VULKAN_VALIDATION is set but ") +
                                                k_validation_layer + " is not installed (vulkan-validationlayers)");
        }
        layers.push_back(k_validation_layer);
        enabled_exts.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    }

    auto app = make<VkApplicationInfo>(VK_STRUCTURE_TYPE_APPLICATION_INFO);
    app.pApplicationName = "tandem";
    app.pEngineName = "tandem";
    // The highest version we use (1.2 driver properties when the device has them); 1.1 devices still work.
    app.apiVersion = std::min<uint32_t>(version, VK_API_VERSION_1_3);
    auto ci = make<VkInstanceCreateInfo>(VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO);
    ci.flags = flags;
    ci.pApplicationInfo = &app;
    ci.enabledLayerCount = uint32_t(layers.size());
    ci.ppEnabledLayerNames = layers.data();
    ci.enabledExtensionCount = uint32_t(enabled_exts.size());
    ci.ppEnabledExtensionNames = enabled_exts.data();
    // Synchronization validation checks our barriers between dependent dispatches too.
    VkValidationFeatureEnableEXT sync = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    auto features = make<VkValidationFeaturesEXT>(VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT);
    features.enabledValidationFeatureCount = 1;
    features.pEnabledValidationFeatures = &sync;
    if (validation) ci.pNext = &features;
    const VkResult r = api_.vkCreateInstance(&ci, nullptr, &instance_);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
        throw error(TANDEM_ERR_BACKEND, std::string("vulkan: no driver; ") + k_install_hint);
    check(r, "vkCreateInstance");
    try {
        load_instance_api(api_, instance_);
        if (validation) {
            if (!api_.vkCreateDebugUtilsMessengerEXT) throw error(TANDEM_ERR_BACKEND, "vulkan: no VK_EXT_debug_utils");
            auto mi = make<VkDebugUtilsMessengerCreateInfoEXT>(VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT);
            mi.messageSeverity =
                VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT;
            mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                             VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                             VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
            mi.pfnUserCallback = on_validation_message;
            check(api_.vkCreateDebugUtilsMessengerEXT(instance_, &mi, nullptr, &messenger_),
                  "vkCreateDebugUtilsMessengerEXT");
        }
    } catch (...) {
        if (api_.vkDestroyInstance) api_.vkDestroyInstance(instance_, nullptr);
        throw;
    }
}

instance::~instance() {
    if (messenger_ != VK_NULL_HANDLE && api_.vkDestroyDebugUtilsMessengerEXT)
        api_.vkDestroyDebugUtilsMessengerEXT(instance_, messenger_, nullptr);
    if (instance_ != VK_NULL_HANDLE) api_.vkDestroyInstance(instance_, nullptr);
}

device::device(const std::string& selector) : instance_(env_flag("TANDEM_VULKAN_VALIDATION")) {
    const instance_api& ia = instance_.api();
    const auto devs = physical_devices(instance_);
    if (devs.empty()) throw error(TANDEM_ERR_BACKEND, std::string("vulkan: no Vulkan device found; ") + k_install_hint);
    std::string sel = selector;
    if (sel.empty())
        if (const char* env = std::getenv("TANDEM_VULKAN_DEVICE")) sel = env;
    index_ = select_device(instance_, devs, sel);
    physical_ = devs[size_t(index_)];
    ia.vkGetPhysicalDeviceProperties(physical_, &props_);
    ia.vkGetPhysicalDeviceMemoryProperties(physical_, &memory_);
    if (props_.apiVersion < VK_API_VERSION_1_1) {
        throw error(TANDEM_ERR_BACKEND, std::string("vulkan: device ") + props_.deviceName + " supports Vulkan " +
                                            version_string(props_.apiVersion) + "; Tandem needs 1.1");
    }

    auto subgroup = make<VkPhysicalDeviceSubgroupProperties>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES);
    auto driver = make<VkPhysicalDeviceDriverProperties>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES);
    auto maint3 =
        make<VkPhysicalDeviceMaintenance3Properties>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES);
    subgroup.pNext = &maint3;
    if (props_.apiVersion >= VK_API_VERSION_1_2) maint3.pNext = &driver;
    auto p2 = make<VkPhysicalDeviceProperties2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2);
    p2.pNext = &subgroup;
    ia.vkGetPhysicalDeviceProperties2(physical_, &p2);

    const VkPhysicalDeviceLimits& l = props_.limits;
    limits_.subgroup_size = std::max(1u, subgroup.subgroupSize);
    limits_.max_invocations = l.maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; ++i) {
        limits_.max_group_size[i] = l.maxComputeWorkGroupSize[i];
        limits_.max_group_count[i] = l.maxComputeWorkGroupCount[i];
    }
    limits_.max_shared_bytes = l.maxComputeSharedMemorySize;
    limits_.max_push_bytes = l.maxPushConstantsSize;
    limits_.max_storage_range = l.maxStorageBufferRange;
    // One alignment for every binding, so a range can be bound as a storage or as a texel buffer.
    limits_.storage_align =
        std::max<VkDeviceSize>({4, l.minStorageBufferOffsetAlignment, l.minTexelBufferOffsetAlignment});
    limits_.max_texel_elements = l.maxTexelBufferElements;
    limits_.max_allocation = maint3.maxMemoryAllocationSize ? maint3.maxMemoryAllocationSize : (VkDeviceSize(1) << 30);
    limits_.timestamp_period_ns = l.timestampPeriod;
    limits_.loop_limited = driver.driverID == VK_DRIVER_ID_MESA_LLVMPIPE ||
                           (props_.vendorID == 0x10005 && std::strstr(props_.deviceName, "llvmpipe"));

    uint32_t n_families = 0;
    ia.vkGetPhysicalDeviceQueueFamilyProperties(physical_, &n_families, nullptr);
    std::vector<VkQueueFamilyProperties> families(n_families);
    ia.vkGetPhysicalDeviceQueueFamilyProperties(physical_, &n_families, families.data());
    bool found = false;
    for (uint32_t i = 0; i < n_families && !found; ++i) {
        if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
            queue_family_ = i;
            limits_.timestamp_bits =
                l.timestampComputeAndGraphics || families[i].timestampValidBits ? families[i].timestampValidBits : 0;
            found = true;
        }
    }
    if (!found)
        throw error(TANDEM_ERR_BACKEND, std::string("vulkan: device ") + props_.deviceName + " has no compute queue");

    const float priority = 1.f;
    auto qi = make<VkDeviceQueueCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO);
    qi.queueFamilyIndex = queue_family_;
    qi.queueCount = 1;
    qi.pQueuePriorities = &priority;
    auto di = make<VkDeviceCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO);
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    check(ia.vkCreateDevice(physical_, &di, nullptr, &device_), std::string("vkCreateDevice on ") + props_.deviceName);
    try {
        api_ = load_device_api(ia, device_);
    } catch (...) {
        // vkDestroyDevice comes from the device table: fetch it directly for this one cleanup.
        auto destroy = reinterpret_cast<PFN_vkDestroyDevice>(ia.vkGetDeviceProcAddr(device_, "vkDestroyDevice"));
        if (destroy) destroy(device_, nullptr);
        throw;
    }
    api_.vkGetDeviceQueue(device_, queue_family_, 0, &queue_);
    log().debug("device {}: {} (subgroup {}, max group {}, shared {} B, storage range {} B, loop limited {})", index_,
                props_.deviceName, limits_.subgroup_size, limits_.max_invocations, limits_.max_shared_bytes,
                limits_.max_storage_range, limits_.loop_limited);
}

device::~device() {
    if (device_ != VK_NULL_HANDLE) {
        api_.vkDeviceWaitIdle(device_);
        api_.vkDestroyDevice(device_, nullptr);
    }
}

std::string device::describe() const {
    return "device " + std::to_string(index_) + ": " + name() + " (" + type_name(props_.deviceType) + ", Vulkan " +
           version_string(props_.apiVersion) + ")";
}

std::string devices_report() {
    std::ostringstream s;
    try {
        instance inst(false);
        const auto devs = physical_devices(inst);
        if (devs.empty()) return std::string("vulkan: no devices; ") + k_install_hint + "\n";
        const int def = default_device(inst, devs);
        const char* env = std::getenv("TANDEM_VULKAN_DEVICE");
        s << "vulkan: " << devs.size() << " device(s); default " << def
          << (env ? std::string(" (TANDEM_VULKAN_DEVICE=") + env + " overrides)" : std::string()) << "\n";
        for (size_t i = 0; i < devs.size(); ++i) {
            VkPhysicalDeviceProperties p;
            inst.api().vkGetPhysicalDeviceProperties(devs[i], &p);
            auto sg = make<VkPhysicalDeviceSubgroupProperties>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES);
            auto p2 = make<VkPhysicalDeviceProperties2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2);
            p2.pNext = &sg;
            if (p.apiVersion >= VK_API_VERSION_1_1) inst.api().vkGetPhysicalDeviceProperties2(devs[i], &p2);
            VkPhysicalDeviceMemoryProperties mem;
            inst.api().vkGetPhysicalDeviceMemoryProperties(devs[i], &mem);
            VkDeviceSize local = 0;
            for (uint32_t h = 0; h < mem.memoryHeapCount; ++h)
                if (mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) local += mem.memoryHeaps[h].size;
            s << "  vulkan:" << i << "  " << p.deviceName << "  [" << type_name(p.deviceType) << ", Vulkan "
              << version_string(p.apiVersion) << ", subgroup " << sg.subgroupSize
              << ", work-group <= " << p.limits.maxComputeWorkGroupInvocations << ", shared "
              << p.limits.maxComputeSharedMemorySize / 1024 << " KiB, device-local " << (local >> 20) << " MiB]"
              << (int(i) == def ? "  (default)" : "") << "\n";
        }
    } catch (const error& e) {
        s << "vulkan: unavailable: " << e.what() << "\n";
    }
    return s.str();
}

}  // namespace tandem::vk
