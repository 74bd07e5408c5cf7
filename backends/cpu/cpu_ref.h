// cpu_ref: the naive scalar oracle. Single-threaded, one obvious loop per op, float accumulation in
// the order a reader expects. Every other backend is tested against it; keep it simple, not fast.
#pragma once

#include <memory>

#include "backends/backend.h"

namespace tandem {

std::unique_ptr<backend> make_cpu_ref_backend();

}  // namespace tandem
