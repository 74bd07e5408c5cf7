// The "opencl" spdlog logger (created on first use). Per-dispatch messages stay at DEBUG or below.
#pragma once

#include <spdlog/spdlog.h>

namespace tandem::opencl {

spdlog::logger& log();

}  // namespace tandem::opencl
