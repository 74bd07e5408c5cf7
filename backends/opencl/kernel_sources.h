// The kernels/*.cl files embedded at build time (cmake/embed_kernels.cmake generates the table in the build
// tree). Each text begins with `#line 1 "kernels/<name>"`, so a compile error points at the .cl line.
#pragma once

#include <cstddef>
#include <string_view>

namespace tandem::opencl {

struct kernel_source {
    const char* name;  // file name inside kernels/, e.g. "rms_norm.cl"
    const char* text;
};

extern const kernel_source k_kernel_sources[];
extern const size_t k_kernel_source_count;

// The embedded text of kernels/<name>; throws tandem::error(TANDEM_ERR_INTERNAL) for an unknown name.
std::string_view find_kernel_source(std::string_view name);

}  // namespace tandem::opencl
