// The "vulkan" spdlog logger.
#include "backends/vulkan/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace tandem::vk {

spdlog::logger& log() {
    static std::shared_ptr<spdlog::logger> logger = [] {
        if (auto l = spdlog::get("vulkan")) return l;
        try {
            return spdlog::stderr_color_mt("vulkan");
        } catch (const spdlog::spdlog_ex&) {
            return spdlog::get("vulkan");  // registered concurrently by another thread
        }
    }();
    return *logger;
}

}  // namespace tandem::vk
