// The program cache: OpenCL programs built lazily on first use, kept in memory keyed by (kernel file,
// defines) for this context's one device, and on disk as program binaries keyed by a hash of (source, build
// options, platform, device name, driver version). A missing, unwritable or corrupt disk entry means a
// rebuild from source, never a failure; a compile error throws with the .cl file, line and build log.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <utility>

#include "backends/opencl/cl_handles.h"
#include "backends/opencl/device.h"

namespace tandem::opencl {

struct cache_stats {
    int built_from_source = 0;
    int loaded_from_disk = 0;
    int disk_rejected = 0;
};

class program_cache {
 public:
    program_cache(cl_context ctx, const device_info& dev);

    // The program of kernels/common.cl (+ the header the table in program_cache.cpp names for <file>, e.g.
    // kquant.cl) + kernels/<file> built with `defines` (e.g. "-DWGS=64").
    cl_program get(const std::string& file, const std::string& defines);
    // A kernel of that program; kernel objects are cached too (one per name).
    cl_kernel kernel(const std::string& file, const std::string& name, const std::string& defines);
    // Builds common.cl + `source` (named kernels/<file> in diagnostics) through the same path, uncached in memory.
    program_handle build_text(const std::string& file, const std::string& source, const std::string& defines);

    const cache_stats& stats() const { return stats_; }
    // The directory of the disk cache ("" when none could be determined).
    const std::filesystem::path& dir() const { return dir_; }

 private:
    program_handle build(const std::string& file, const std::string& source, const std::string& options);
    program_handle load_binary(const std::filesystem::path& path, uint64_t key, const std::string& options);
    void store_binary(cl_program prog, const std::filesystem::path& path, uint64_t key);

    cl_context ctx_;
    device_info dev_;
    std::filesystem::path dir_;
    std::map<std::pair<std::string, std::string>, program_handle> programs_;
    std::map<std::string, kernel_handle> kernels_;  // key: file '\n' defines '\n' name
    cache_stats stats_;
};

}  // namespace tandem::opencl
