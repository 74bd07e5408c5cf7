// Assertion failure reporting.
#include "engine/error.h"

#include <cstdio>
#include <cstdlib>

namespace tandem {

[[noreturn]] void assert_fail(const char* expr, const char* file, int line) {
    std::fprintf(stderr, "tandem: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    std::abort();
}

}  // namespace tandem
