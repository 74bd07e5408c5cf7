// Shared parts of the backend interface: tensor views, op names, the default wrap_host and matmul_multi.
#include "backends/backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>

#include "engine/error.h"

namespace tandem {

void buffer::attach_layout(const tensor& t, std::shared_ptr<const derived_layout> l) {
    TANDEM_ASSERT(t.buf == this && l != nullptr);
    std::unique_lock lock(layouts_mu_);
    auto [first, last] = layouts_.equal_range(t.offset);
    for (auto it = first; it != last; ++it) {
        if (it->second.type == t.type && it->second.ne == t.ne) {
            it->second.layout = std::move(l);
            return;
        }
    }
    layouts_.emplace(t.offset, layout_entry{t.nbytes(), t.type, t.ne, std::move(l)});
}

std::shared_ptr<const derived_layout> buffer::layout(const tensor& t) const {
    std::shared_lock lock(layouts_mu_);
    auto [first, last] = layouts_.equal_range(t.offset);
    for (auto it = first; it != last; ++it) {
        if (it->second.type == t.type && it->second.ne == t.ne) return it->second.layout;
    }
    return nullptr;
}

void buffer::drop_layouts(size_t offset, size_t bytes) {
    {
        std::shared_lock lock(layouts_mu_);
        if (layouts_.empty()) return;
    }
    std::unique_lock lock(layouts_mu_);
    for (auto it = layouts_.begin(); it != layouts_.end();) {
        const bool overlaps = it->first < offset + bytes && offset < it->first + it->second.bytes;
        it = overlaps ? layouts_.erase(it) : std::next(it);
    }
}

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
        case op::matmul_t: return "matmul_t";
        case op::weight_grad: return "weight_grad";
        case op::rms_norm_back: return "rms_norm_back";
        case op::attention_back: return "attention_back";
        case op::swiglu_back: return "swiglu_back";
        case op::get_rows_back: return "get_rows_back";
        case op::cross_entropy: return "cross_entropy";
        case op::adamw: return "adamw";
        case op::scale: return "scale";
        case op::sum_sq: return "sum_sq";
    }
    return "unknown";
}

const std::vector<op>& all_ops() {
    static const std::vector<op> ops = {
        op::get_rows,      op::rms_norm,    op::matmul,        op::rope,          op::attention,
        op::swiglu,        op::add,         op::softmax,       op::kv_write,      op::kv_copy,
        op::argmax,        op::top_k,       op::matmul_t,      op::weight_grad,   op::rms_norm_back,
        op::attention_back, op::swiglu_back, op::get_rows_back, op::cross_entropy, op::adamw,
        op::scale,         op::sum_sq,
    };
    return ops;
}

adamw_corrections adamw_bias_corrections(const adamw_params& p) {
    const double t = double(std::max(p.step, 1));
    return {float(1.0 - std::pow(double(p.beta1), t)), float(1.0 - std::pow(double(p.beta2), t))};
}

namespace {
[[noreturn]] void not_implemented(const backend& b, op o) {
    throw error(TANDEM_ERR_UNSUPPORTED, std::string(op_name(o)) + " is not implemented on backend " + b.name());
}
}  // namespace

void backend::matmul_t(const tensor&, const tensor&, const tensor&) { not_implemented(*this, op::matmul_t); }
void backend::weight_grad(const tensor&, const tensor&, float, float, const tensor&) {
    not_implemented(*this, op::weight_grad);
}
void backend::rms_norm_back(const tensor&, const tensor&, const tensor&, float, const tensor&) {
    not_implemented(*this, op::rms_norm_back);
}
void backend::swiglu_back(const tensor&, const tensor&, const tensor&, const tensor&, const tensor&) {
    not_implemented(*this, op::swiglu_back);
}
void backend::attention_back(const tensor&, const tensor&, const tensor&, const tensor&, const tensor&, const tensor&,
                             const attention_params&, const tensor&, const tensor&, const tensor&) {
    not_implemented(*this, op::attention_back);
}
void backend::get_rows_back(const tensor&, const tensor&, const tensor&) { not_implemented(*this, op::get_rows_back); }
void backend::cross_entropy(const tensor&, const tensor&, const tensor&, float, const tensor&, const tensor&) {
    not_implemented(*this, op::cross_entropy);
}
void backend::adamw(const tensor&, const tensor&, const tensor&, const tensor&, const adamw_params&) {
    not_implemented(*this, op::adamw);
}
void backend::scale(const tensor&, float, const tensor&) { not_implemented(*this, op::scale); }
void backend::sum_sq(const tensor&, const tensor&) { not_implemented(*this, op::sum_sq); }

void backend::matmul_multi(std::span<const tensor> ws, const tensor& x, std::span<const tensor> outs) {
    if (ws.size() != outs.size()) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "matmul_multi: " + std::to_string(ws.size()) + " weights but " +
                                                     std::to_string(outs.size()) + " outputs");
    }
    for (size_t i = 0; i < ws.size(); ++i) matmul(ws[i], x, outs[i]);
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
