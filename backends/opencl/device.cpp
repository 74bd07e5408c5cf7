// Platform/device enumeration and selection. A machine without an ICD reports "no platform" as an empty
// list (clGetPlatformIDs returns CL_PLATFORM_NOT_FOUND_KHR there), which selection turns into a clear error.
#include "backends/opencl/device.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "backends/opencl/cl_handles.h"
#include "engine/error.h"

namespace tandem::opencl {

namespace {

std::string platform_string(cl_platform_id p, cl_platform_info what) {
    size_t n = 0;
    if (clGetPlatformInfo(p, what, 0, nullptr, &n) != CL_SUCCESS || n == 0) return "";
    std::string s(n, '\0');
    if (clGetPlatformInfo(p, what, n, s.data(), nullptr) != CL_SUCCESS) return "";
    s.resize(s.find('\0') == std::string::npos ? n : s.find('\0'));
    return s;
}

std::string device_string(cl_device_id d, cl_device_info what) {
    size_t n = 0;
    if (clGetDeviceInfo(d, what, 0, nullptr, &n) != CL_SUCCESS || n == 0) return "";
    std::string s(n, '\0');
    if (clGetDeviceInfo(d, what, n, s.data(), nullptr) != CL_SUCCESS) return "";
    s.resize(s.find('\0') == std::string::npos ? n : s.find('\0'));
    return s;
}

template <typename T>
T device_value(cl_device_id d, cl_device_info what) {
    T v{};
    if (clGetDeviceInfo(d, what, sizeof v, &v, nullptr) != CL_SUCCESS) return T{};
    return v;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return s;
}

std::string mib(cl_ulong bytes) {
    std::ostringstream s;
    if (bytes >= (cl_ulong(1) << 20))
        s << (bytes >> 20) << " MiB";
    else
        s << (bytes >> 10) << " KiB";
    return s.str();
}

const char* k_no_platform = "no OpenCL platform found (install an ICD such as pocl-opencl-icd)";

}  // namespace

std::string device_info::type_name() const {
    if (type & CL_DEVICE_TYPE_GPU) return "GPU";
    if (type & CL_DEVICE_TYPE_CPU) return "CPU";
    if (type & CL_DEVICE_TYPE_ACCELERATOR) return "accelerator";
    return "other";
}

std::string device_info::label() const {
    return std::to_string(platform_index) + ":" + std::to_string(device_index) + " " + name;
}

std::vector<device_info> list_devices() {
    cl_uint n_platforms = 0;
    cl_int st = clGetPlatformIDs(0, nullptr, &n_platforms);
    if (st == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || n_platforms == 0) return {};
    check(st, "clGetPlatformIDs");
    std::vector<cl_platform_id> platforms(n_platforms);
    check(clGetPlatformIDs(n_platforms, platforms.data(), nullptr), "clGetPlatformIDs");
    std::vector<device_info> out;
    for (cl_uint p = 0; p < n_platforms; ++p) {
        cl_uint n_devices = 0;
        st = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 0, nullptr, &n_devices);
        if (st == CL_DEVICE_NOT_FOUND || n_devices == 0) continue;
        check(st, "clGetDeviceIDs");
        std::vector<cl_device_id> devices(n_devices);
        check(clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, n_devices, devices.data(), nullptr), "clGetDeviceIDs");
        for (cl_uint d = 0; d < n_devices; ++d) {
            device_info i;
            i.platform_index = int(p), i.device_index = int(d);
            i.platform = platforms[p], i.id = devices[d];
            i.platform_name = platform_string(platforms[p], CL_PLATFORM_NAME);
            i.platform_version = platform_string(platforms[p], CL_PLATFORM_VERSION);
            i.name = device_string(devices[d], CL_DEVICE_NAME);
            i.vendor = device_string(devices[d], CL_DEVICE_VENDOR);
            i.driver_version = device_string(devices[d], CL_DRIVER_VERSION);
            i.device_version = device_string(devices[d], CL_DEVICE_VERSION);
            i.c_version = device_string(devices[d], CL_DEVICE_OPENCL_C_VERSION);
            i.type = device_value<cl_device_type>(devices[d], CL_DEVICE_TYPE);
            i.compute_units = device_value<cl_uint>(devices[d], CL_DEVICE_MAX_COMPUTE_UNITS);
            i.max_work_group = device_value<size_t>(devices[d], CL_DEVICE_MAX_WORK_GROUP_SIZE);
            i.local_mem = device_value<cl_ulong>(devices[d], CL_DEVICE_LOCAL_MEM_SIZE);
            i.global_mem = device_value<cl_ulong>(devices[d], CL_DEVICE_GLOBAL_MEM_SIZE);
            i.max_alloc = device_value<cl_ulong>(devices[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE);
            i.unified_memory = device_value<cl_bool>(devices[d], CL_DEVICE_HOST_UNIFIED_MEMORY) != CL_FALSE;
            i.fp16 = device_string(devices[d], CL_DEVICE_EXTENSIONS).find("cl_khr_fp16") != std::string::npos;
            out.push_back(std::move(i));
        }
    }
    return out;
}

device_info select_device(const std::string& spec_in) {
    std::string spec = spec_in;
    if (spec.empty())
        if (const char* env = std::getenv("TANDEM_OPENCL_DEVICE")) spec = env;
    const auto devices = list_devices();
    if (devices.empty()) throw error(TANDEM_ERR_BACKEND, k_no_platform);
    if (spec.empty()) {
        for (const auto& d : devices)
            if (d.is_gpu()) return d;
        return devices.front();
    }
    int p = -1, d = -1;
    char tail = 0;
    if (std::sscanf(spec.c_str(), "%d:%d%c", &p, &d, &tail) == 2) {
        for (const auto& i : devices)
            if (i.platform_index == p && i.device_index == d) return i;
    } else {
        for (const auto& i : devices)
            if (lower(i.name).find(lower(spec)) != std::string::npos) return i;
    }
    std::string known;
    for (const auto& i : devices) known += "\n  " + i.label();
    throw error(TANDEM_ERR_BACKEND, "no OpenCL device matches '" + spec + "'; devices:" + known);
}

std::string devices_report() {
    std::vector<device_info> devices;
    try {
        devices = list_devices();
    } catch (const error& e) {
        return std::string("OpenCL: ") + e.what() + "\n";
    }
    if (devices.empty()) return std::string("OpenCL: ") + k_no_platform + "\n";
    std::ostringstream s;
    s << "OpenCL devices (select with --backend opencl:P:D or env TANDEM_OPENCL_DEVICE):\n";
    int last_platform = -1;
    for (const auto& d : devices) {
        if (d.platform_index != last_platform) {
            s << "  platform " << d.platform_index << ": " << d.platform_name << " (" << d.platform_version << ")\n";
            last_platform = d.platform_index;
        }
        s << "    " << d.platform_index << ":" << d.device_index << "  " << d.name << "\n"
          << "         type " << d.type_name() << ", vendor " << d.vendor << ", driver " << d.driver_version << ", "
          << d.c_version << "\n"
          << "         compute units " << d.compute_units << ", max work-group " << d.max_work_group
          << ", local memory " << mib(d.local_mem) << ", global memory " << mib(d.global_mem) << " (max allocation "
          << mib(d.max_alloc) << "), fp16 " << (d.fp16 ? "yes" : "no") << "\n";
    }
    return s.str();
}

}  // namespace tandem::opencl
