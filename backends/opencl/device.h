// OpenCL platform and device discovery: what every device is, which one a spec string selects, and the
// text report of `tandem devices`.
#pragma once

#include <CL/cl.h>

#include <string>
#include <vector>

namespace tandem::opencl {

struct device_info {
    int platform_index = 0, device_index = 0;
    cl_platform_id platform = nullptr;
    cl_device_id id = nullptr;
    std::string platform_name, platform_version;
    std::string name, vendor, driver_version, device_version, c_version;
    cl_device_type type = 0;
    cl_uint compute_units = 0;
    size_t max_work_group = 0;
    cl_ulong local_mem = 0, global_mem = 0, max_alloc = 0;
    bool fp16 = false;            // cl_khr_fp16: half arithmetic (vload_half/vstore_half work without it)
    bool unified_memory = false;  // CL_DEVICE_HOST_UNIFIED_MEMORY: device memory is host memory (CPU devices)

    bool is_cpu() const { return (type & CL_DEVICE_TYPE_CPU) != 0; }
    bool is_gpu() const { return (type & CL_DEVICE_TYPE_GPU) != 0; }
    std::string type_name() const;
    std::string label() const;  // "P:D name"
};

// Every device of every platform; empty when no platform (no ICD installed). Throws on driver failures.
std::vector<device_info> list_devices();

// The device `spec` selects: "" means env TANDEM_OPENCL_DEVICE when set, else the first GPU, else the first
// device; "P:D" are indices; anything else is a case-insensitive substring of the device name.
// Throws tandem::error(TANDEM_ERR_BACKEND) when there is no platform or nothing matches.
device_info select_device(const std::string& spec);

// The listing of `tandem devices` for OpenCL.
std::string devices_report();

}  // namespace tandem::opencl
