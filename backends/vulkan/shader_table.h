// The compiled-in SPIR-V shader variants: one entry per row of shaders/variants.cmake, generated at build time
// by cmake/compile_shaders.cmake (glslangValidator --vn). Looked up by variant name, e.g. "matmul_f16_f32".
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace tandem::vk {

struct shader_variant {
    const char* name;
    const uint32_t* code;
    size_t bytes;
};

std::span<const shader_variant> shader_variants();

}  // namespace tandem::vk
