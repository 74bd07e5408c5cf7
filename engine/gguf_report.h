// A human-readable report of a GGUF file for `tandem info`: header, every metadata key with its type and
// (abbreviated) value, every tensor with shape, type and size, and the vocabulary fingerprint.
#pragma once

#include <string>

namespace tandem {

std::string gguf_report(const std::string& path);

}  // namespace tandem
