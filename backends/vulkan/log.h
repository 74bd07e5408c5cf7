// The "vulkan" spdlog logger (created on first use, on stderr: stdout carries generated text).
// Per-dispatch messages stay at DEBUG or below.
#pragma once

#include <spdlog/spdlog.h>

namespace tandem::vk {

spdlog::logger& log();

}  // namespace tandem::vk
