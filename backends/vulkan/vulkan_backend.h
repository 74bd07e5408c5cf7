// The Vulkan backend: every op of backends/backend.h as a GLSL compute shader (shaders/*.comp), compiled to
// SPIR-V at build time. Device choice: make_vulkan_backend("") uses env TANDEM_VULKAN_DEVICE (an index or a
// case-insensitive name substring) or the first discrete/integrated GPU, else the first device.
// Environment: TANDEM_VULKAN_FORCE_STAGING=1 keeps tensors in memory the host never maps (the discrete-GPU
// path, testable on lavapipe); TANDEM_VULKAN_VALIDATION=1 enables the Khronos validation layer;
// TANDEM_VULKAN_PROFILE=1 times every dispatch and logs a per-shader summary when the backend is destroyed;
// TANDEM_VULKAN_KERNELS=cpu|gpu picks the kernel family (default: cpu for CPU devices such as lavapipe);
// TANDEM_VULKAN_LOOP_BUDGET=N caps loop iterations per invocation (default 32768 on lavapipe, which silently
// stops a shader invocation after 65,535). The pipeline cache lives in $TANDEM_CACHE_DIR, else
// $XDG_CACHE_HOME/tandem/vulkan, else ~/.cache/tandem/vulkan.
// Buffers must be destroyed before the backend that made them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backends/backend.h"

namespace tandem {

// selector: "" (default choice), a device index ("1") or a name substring ("llvmpipe"). Throws
// tandem::error(TANDEM_ERR_BACKEND) naming what to install when there is no loader or no device.
std::unique_ptr<backend> make_vulkan_backend(const std::string& selector = "");

// The Vulkan devices of this machine, one per line, for `tandem devices` (never throws).
std::string vulkan_devices_report();

// Validation-layer errors reported since the process started (TANDEM_VULKAN_VALIDATION=1).
uint64_t vulkan_validation_errors();
// True when VK_LAYER_KHRONOS_validation is installed.
bool vulkan_validation_available();

}  // namespace tandem
