// The collaboration layer's logger ("collab", to stderr).
#pragma once

#include <spdlog/spdlog.h>

namespace tandem::collab {
spdlog::logger& log();
}
