// Launch overhead of the GPU APIs, measured below the backends (which expose no empty dispatch): an empty OpenCL
// kernel enqueued on one work-item and waited for with clFinish, and an empty Vulkan command buffer submitted
// and waited for with a fence. Both pick the device the backends pick by default.
#pragma once

#include <optional>
#include <string>

#include "bench/timing.h"

namespace tandem::bench {

struct launch_result {
    std::optional<timing> t;  // per launch; empty when the API or a device is missing
    std::string device;       // the device measured
    std::string why_not;      // why t is empty
};

// clEnqueueNDRangeKernel(empty kernel, 1 work-item) + clFinish; device: env TANDEM_OPENCL_DEVICE is NOT
// honoured, the first GPU else the first device (the backend's default without the variable).
launch_result opencl_empty_kernel(const repeat_policy& p);
// vkQueueSubmit(one empty command buffer) + vkWaitForFences + vkResetFences on the first compute queue of the
// first discrete or integrated GPU, else the first device (the backend's default without TANDEM_VULKAN_DEVICE).
launch_result vulkan_empty_submit(const repeat_policy& p);

}  // namespace tandem::bench
