// Empty-launch timings straight through the OpenCL API and the Vulkan loader, see launch.h. Failures become a
// reason in the result, never an exception: a machine without a GPU API still gets its other limits.
#include "bench/launch.h"

#include <vector>

#if TANDEM_BENCH_OPENCL
#include <CL/cl.h>
#endif
#if TANDEM_BENCH_VULKAN
#include <dlfcn.h>
#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>
#endif

namespace tandem::bench {

#if TANDEM_BENCH_OPENCL
launch_result opencl_empty_kernel(const repeat_policy& p) {
    launch_result r;
    cl_uint n_platforms = 0;
    if (clGetPlatformIDs(0, nullptr, &n_platforms) != CL_SUCCESS || n_platforms == 0) {
        r.why_not = "no OpenCL platform";
        return r;
    }
    std::vector<cl_platform_id> platforms(n_platforms);
    clGetPlatformIDs(n_platforms, platforms.data(), nullptr);
    cl_device_id dev = nullptr;
    for (cl_device_type want : {cl_device_type(CL_DEVICE_TYPE_GPU), cl_device_type(CL_DEVICE_TYPE_ALL)}) {
        for (cl_platform_id pl : platforms) {
            if (!dev && clGetDeviceIDs(pl, want, 1, &dev, nullptr) != CL_SUCCESS) dev = nullptr;
        }
    }
    if (!dev) {
        r.why_not = "no OpenCL device";
        return r;
    }
    char name[256] = {};
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, nullptr);
    r.device = name;
    cl_int err = CL_SUCCESS;
    cl_context ctx = clCreateContext(nullptr, 1, &dev, nullptr, nullptr, &err);
    cl_command_queue q = ctx ? clCreateCommandQueue(ctx, dev, 0, &err) : nullptr;
    const char* src = "__kernel void empty(void) {}";
    cl_program prog = q ? clCreateProgramWithSource(ctx, 1, &src, nullptr, &err) : nullptr;
    if (prog) err = clBuildProgram(prog, 1, &dev, "", nullptr, nullptr);
    cl_kernel k = prog && err == CL_SUCCESS ? clCreateKernel(prog, "empty", &err) : nullptr;
    if (k) {
        const size_t global = 1;
        bool ok = true;
        r.t = measure(
            [&] {
                ok &= clEnqueueNDRangeKernel(q, k, 1, nullptr, &global, nullptr, 0, nullptr, nullptr) == CL_SUCCESS;
                ok &= clFinish(q) == CL_SUCCESS;
            },
            p);
        if (!ok) r.t.reset(), r.why_not = "enqueue failed";
    } else {
        r.why_not = "OpenCL setup failed with error " + std::to_string(err);
    }
    if (k) clReleaseKernel(k);
    if (prog) clReleaseProgram(prog);
    if (q) clReleaseCommandQueue(q);
    if (ctx) clReleaseContext(ctx);
    return r;
}
#else
launch_result opencl_empty_kernel(const repeat_policy&) { return {std::nullopt, "", "built without OpenCL"}; }
#endif

#if TANDEM_BENCH_VULKAN
namespace {

// The few entry points this needs, from the loader opened at run time.
struct vk_fns {
    void* lib = nullptr;
    PFN_vkGetInstanceProcAddr get_instance_proc = nullptr;
    PFN_vkCreateInstance create_instance = nullptr;
    PFN_vkDestroyInstance destroy_instance = nullptr;
    PFN_vkEnumeratePhysicalDevices enumerate_devices = nullptr;
    PFN_vkGetPhysicalDeviceProperties device_properties = nullptr;
    PFN_vkGetPhysicalDeviceQueueFamilyProperties queue_families = nullptr;
    PFN_vkCreateDevice create_device = nullptr;
    PFN_vkDestroyDevice destroy_device = nullptr;
    PFN_vkGetDeviceQueue get_queue = nullptr;
    PFN_vkCreateCommandPool create_pool = nullptr;
    PFN_vkDestroyCommandPool destroy_pool = nullptr;
    PFN_vkAllocateCommandBuffers alloc_cmd = nullptr;
    PFN_vkBeginCommandBuffer begin_cmd = nullptr;
    PFN_vkEndCommandBuffer end_cmd = nullptr;
    PFN_vkCreateFence create_fence = nullptr;
    PFN_vkDestroyFence destroy_fence = nullptr;
    PFN_vkQueueSubmit submit = nullptr;
    PFN_vkWaitForFences wait_fences = nullptr;
    PFN_vkResetFences reset_fences = nullptr;
    ~vk_fns() {
        if (lib) dlclose(lib);
    }
};

template <typename F>
void load(F& f, PFN_vkGetInstanceProcAddr gipa, VkInstance inst, const char* name) {
    f = reinterpret_cast<F>(gipa(inst, name));
}

}  // namespace

launch_result vulkan_empty_submit(const repeat_policy& p) {
    launch_result r;
    vk_fns f;
    f.lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!f.lib) {
        r.why_not = "no Vulkan loader (libvulkan.so.1)";
        return r;
    }
    f.get_instance_proc = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(f.lib, "vkGetInstanceProcAddr"));
    if (!f.get_instance_proc) {
        r.why_not = "the Vulkan loader has no vkGetInstanceProcAddr";
        return r;
    }
    load(f.create_instance, f.get_instance_proc, nullptr, "vkCreateInstance");
    VkApplicationInfo app{};
    app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
    app.pApplicationName = "tandem-bench";
    app.apiVersion = VK_API_VERSION_1_1;
    VkInstanceCreateInfo ici{};
    ici.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
    ici.pApplicationInfo = &app;
    VkInstance inst = nullptr;
    if (!f.create_instance || f.create_instance(&ici, nullptr, &inst) != VK_SUCCESS) {
        r.why_not = "vkCreateInstance failed";
        return r;
    }
    auto gipa = f.get_instance_proc;
    load(f.destroy_instance, gipa, inst, "vkDestroyInstance");
    load(f.enumerate_devices, gipa, inst, "vkEnumeratePhysicalDevices");
    load(f.device_properties, gipa, inst, "vkGetPhysicalDeviceProperties");
    load(f.queue_families, gipa, inst, "vkGetPhysicalDeviceQueueFamilyProperties");
    load(f.create_device, gipa, inst, "vkCreateDevice");
    load(f.destroy_device, gipa, inst, "vkDestroyDevice");
    load(f.get_queue, gipa, inst, "vkGetDeviceQueue");
    load(f.create_pool, gipa, inst, "vkCreateCommandPool");
    load(f.destroy_pool, gipa, inst, "vkDestroyCommandPool");
    load(f.alloc_cmd, gipa, inst, "vkAllocateCommandBuffers");
    load(f.begin_cmd, gipa, inst, "vkBeginCommandBuffer");
    load(f.end_cmd, gipa, inst, "vkEndCommandBuffer");
    load(f.create_fence, gipa, inst, "vkCreateFence");
    load(f.destroy_fence, gipa, inst, "vkDestroyFence");
    load(f.submit, gipa, inst, "vkQueueSubmit");
    load(f.wait_fences, gipa, inst, "vkWaitForFences");
    load(f.reset_fences, gipa, inst, "vkResetFences");

    uint32_t n = 0;
    f.enumerate_devices(inst, &n, nullptr);
    std::vector<VkPhysicalDevice> devs(n);
    if (n) f.enumerate_devices(inst, &n, devs.data());
    VkPhysicalDevice pd = nullptr;
    VkPhysicalDeviceProperties props{};
    for (VkPhysicalDevice d : devs) {
        f.device_properties(d, &props);
        if (props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ||
            props.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU) {
            pd = d;
            break;
        }
    }
    if (!pd && !devs.empty()) pd = devs[0];
    uint32_t family = UINT32_MAX;
    if (pd) {
        f.device_properties(pd, &props);
        r.device = props.deviceName;
        uint32_t nf = 0;
        f.queue_families(pd, &nf, nullptr);
        std::vector<VkQueueFamilyProperties> fams(nf);
        f.queue_families(pd, &nf, fams.data());
        for (uint32_t i = 0; i < nf && family == UINT32_MAX; ++i)
            if (fams[i].queueFlags & VK_QUEUE_COMPUTE_BIT) family = i;
    }
    VkDevice dev = nullptr;
    VkCommandPool pool = nullptr;
    VkFence fence = nullptr;
    if (family != UINT32_MAX) {
        const float prio = 1.f;
        VkDeviceQueueCreateInfo qci{};
        qci.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
        qci.queueFamilyIndex = family;
        qci.queueCount = 1;
        qci.pQueuePriorities = &prio;
        VkDeviceCreateInfo dci{};
        dci.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
        dci.queueCreateInfoCount = 1;
        dci.pQueueCreateInfos = &qci;
        if (f.create_device(pd, &dci, nullptr, &dev) != VK_SUCCESS) dev = nullptr;
    }
    if (dev) {
        VkQueue q = nullptr;
        f.get_queue(dev, family, 0, &q);
        VkCommandPoolCreateInfo pci{};
        pci.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
        pci.queueFamilyIndex = family;
        VkCommandBuffer cmd = nullptr;
        VkCommandBufferAllocateInfo cai{};
        cai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
        cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
        cai.commandBufferCount = 1;
        VkCommandBufferBeginInfo cbi{};
        cbi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
        VkFenceCreateInfo fci{};
        fci.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
        bool ok = f.create_pool(dev, &pci, nullptr, &pool) == VK_SUCCESS;
        cai.commandPool = pool;
        ok = ok && f.alloc_cmd(dev, &cai, &cmd) == VK_SUCCESS && f.begin_cmd(cmd, &cbi) == VK_SUCCESS &&
             f.end_cmd(cmd) == VK_SUCCESS && f.create_fence(dev, &fci, nullptr, &fence) == VK_SUCCESS;
        if (ok) {
            VkSubmitInfo si{};
            si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
            si.commandBufferCount = 1;
            si.pCommandBuffers = &cmd;
            r.t = measure(
                [&] {
                    ok &= f.submit(q, 1, &si, fence) == VK_SUCCESS;
                    ok &= f.wait_fences(dev, 1, &fence, VK_TRUE, UINT64_MAX) == VK_SUCCESS;
                    ok &= f.reset_fences(dev, 1, &fence) == VK_SUCCESS;
                },
                p);
            if (!ok) r.t.reset(), r.why_not = "vkQueueSubmit or vkWaitForFences failed";
        } else {
            r.why_not = "Vulkan command buffer or fence setup failed";
        }
        if (fence) f.destroy_fence(dev, fence, nullptr);
        if (pool) f.destroy_pool(dev, pool, nullptr);
        f.destroy_device(dev, nullptr);
    } else {
        r.why_not = pd ? "no compute queue or vkCreateDevice failed" : "no Vulkan device";
    }
    f.destroy_instance(inst, nullptr);
    return r;
}
#else
launch_result vulkan_empty_submit(const repeat_policy&) { return {std::nullopt, "", "built without Vulkan"}; }
#endif

}  // namespace tandem::bench
