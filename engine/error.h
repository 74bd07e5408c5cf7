// Errors: tandem::error carries a status code and a message that names the problem.
// Backends and loaders throw; the public C API (engine/tandem.h) turns them into status codes.
#pragma once

#include <stdexcept>
#include <string>

#include "engine/tandem.h"

namespace tandem {

class error : public std::runtime_error {
   public:
    error(tandem_status status, const std::string& msg) : std::runtime_error(msg), status_(status) {}
    tandem_status status() const { return status_; }

   private:
    tandem_status status_;
};

[[noreturn]] void assert_fail(const char* expr, const char* file, int line);

}  // namespace tandem

// Programming errors (broken invariants inside the engine), not bad input: bad input throws tandem::error.
#define TANDEM_ASSERT(x)                                                   \
    do {                                                                   \
        if (!(x)) ::tandem::assert_fail(#x, __FILE__, __LINE__);           \
    } while (0)
