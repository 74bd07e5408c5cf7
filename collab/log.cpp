#include "collab/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace tandem::collab {

spdlog::logger& log() {
    static std::shared_ptr<spdlog::logger> logger = [] {
        if (auto l = spdlog::get("collab")) return l;
        try {
            return spdlog::stderr_color_mt("collab");
        } catch (const spdlog::spdlog_ex&) {
            return spdlog::get("collab");  // registered concurrently by another thread
        }
    }();
    return *logger;
}

}  // namespace tandem::collab
