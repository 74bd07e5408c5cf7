// cpu: the fast CPU backend. OpenBLAS SGEMM for f32 matrix products, a thread pool for every other loop.
#pragma once

#include <memory>

#include "backends/backend.h"

namespace tandem {

std::unique_ptr<backend> make_cpu_backend();

}  // namespace tandem
