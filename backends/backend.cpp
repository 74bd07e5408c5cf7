// Shared parts of the backend interface: tensor views, op names, the default wrap_host.
#include "backends/backend.h"

#include <algorithm>
#include <cstdlib>

#include "engine/error.h"

namespace tandem {

tensor tensor::rows(int64_t first, int64_t count) const {
    TANDEM_ASSERT(first >= 0 && count >= 0 && first + count <= nrows());
    tensor t = *this;
    t.offset += size_t(first) * row_bytes();
    t.ne = {ne[0], count, 1, 1};
    return t;
}

const char* op_name(op o) {
    switch (o) {
        case op::get_rows: return "get_rows";
        case op::rms_norm: return "rms_norm";
        case op::matmul: return "matmul";
        case op::rope: return "rope";
        case op::attention: return "attention";
        case op::swiglu: return "swiglu";
        case op::add: return "add";
        case op::softmax: return "softmax";
        case op::kv_write: return "kv_write";
        case op::kv_copy: return "kv_copy";
        case op::argmax: return "argmax";
        case op::top_k: return "top_k";
    }
    return "unknown";
}

std::unique_ptr<buffer> backend::wrap_host(const void* data, size_t bytes) {
    auto buf = alloc(bytes);
    upload(*buf, 0, data, bytes);
    return buf;
}

bool kernel_failure_forced(const std::string& kernel) {
    const char* env = std::getenv("TANDEM_FAIL_KERNELS");
    if (!env || !*env) return false;
    const std::string list(env);
    for (size_t at = 0; at <= list.size();) {
        const size_t comma = std::min(list.find(',', at), list.size());
        const std::string item = list.substr(at, comma - at);
        if (!item.empty() && kernel.find(item) != std::string::npos) return true;
        at = comma + 1;
    }
    return false;
}

}  // namespace tandem
