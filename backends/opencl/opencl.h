// Entry points of the OpenCL backend for the registry, the C API and the tests. No OpenCL headers here:
// engine code includes this without depending on CL/cl.h.
#pragma once

#include <memory>
#include <string>

#include "backends/backend.h"

namespace tandem {

// Creates the OpenCL backend on one device. `device` is "" (then env TANDEM_OPENCL_DEVICE, else the first
// GPU, else the first device), "P:D" (platform and device indices as `tandem devices` lists them) or a
// case-insensitive substring of the device name. Throws tandem::error(TANDEM_ERR_BACKEND) when there is no
// OpenCL platform or no matching device. Env TANDEM_OPENCL_GEMV=row|wg and TANDEM_OPENCL_GEMM=
// tandem|clblast|auto override the kernel variants; they are read here, once per backend.
std::unique_ptr<backend> make_opencl_backend(const std::string& device = "");

// Every OpenCL platform and device (index, name, type, driver, compute units, limits, fp16). Never throws
// for a missing platform: it says so in the text.
std::string opencl_devices_report();

// ---- test hooks (tests/test_opencl.cpp) ----
struct opencl_cache_stats {
    int built_from_source = 0;  // programs compiled from the embedded .cl text
    int loaded_from_disk = 0;   // programs created from a cached binary
    int disk_rejected = 0;      // cache entries that were corrupt or failed to load (then rebuilt)
};
// Program cache counters of an OpenCL backend (`b` must come from make_opencl_backend).
opencl_cache_stats opencl_stats(const backend& b);
// Compiles kernels/common.cl followed by `source` (named kernels/<file_name> in diagnostics) through the
// backend's program path, disk cache included. Throws tandem::error(TANDEM_ERR_BACKEND) on a compile error.
void opencl_build_for_test(backend& b, const std::string& file_name, const std::string& source);
// The variants an OpenCL backend chose: "row"/"wg" and "tandem"/"clblast"/"auto".
std::string opencl_gemv_variant(const backend& b);
std::string opencl_gemm_variant(const backend& b);

}  // namespace tandem
