// AdamW with global-norm clipping (see optimizer.h). The clip factor needs the norm on the host: each gradient's
// sum of squares lands in one slot of a small buffer, downloaded once per step and summed in double.
#include "engine/optimizer.h"

#include <cmath>
#include <numbers>

#include "engine/error.h"

namespace tandem {

float learning_rate(const optimizer_config& c, int64_t step) {
    if (c.warmup_steps > 0 && step <= c.warmup_steps) return c.lr * float(step) / float(c.warmup_steps + 1);
    if (c.schedule == lr_schedule::constant || c.total_steps <= c.warmup_steps) return c.lr;
    const double t = std::min(1.0, double(step - c.warmup_steps) / double(c.total_steps - c.warmup_steps));
    const double lo = c.min_lr_ratio;
    return float(c.lr * (lo + (1 - lo) * 0.5 * (1 + std::cos(std::numbers::pi * t))));
}

adamw_optimizer::adamw_optimizer(backend& be, std::vector<tensor> params, const optimizer_config& cfg)
    : be_(be), params_(std::move(params)), cfg_(cfg) {
    size_t off = 0;
    std::vector<size_t> at;
    for (const auto& p : params_) {
        if (p.type != dtype::f32) throw error(TANDEM_ERR_INVALID_ARGUMENT, "AdamW updates f32 parameters only");
        at.push_back(off);
        off += (p.nbytes() + 255) / 256 * 256;
    }
    const size_t half = off;
    state_ = be_.alloc(std::max<size_t>(2 * half, 256));
    for (size_t i = 0; i < params_.size(); ++i) {
        m_.push_back(tensor{state_.get(), at[i], dtype::f32, params_[i].ne});
        v_.push_back(tensor{state_.get(), half + at[i], dtype::f32, params_[i].ne});
    }
    const std::vector<float> zeros(2 * half / 4, 0.f);
    if (!zeros.empty()) be_.upload(*state_, 0, zeros.data(), zeros.size() * 4);
    norms_ = be_.alloc(std::max<size_t>(params_.size() * 4, 4));
    host_norms_.resize(params_.size());
}

adamw_optimizer::~adamw_optimizer() = default;

double adamw_optimizer::step(const std::vector<tensor>& grads) {
    TANDEM_ASSERT(grads.size() == params_.size());
    for (size_t i = 0; i < grads.size(); ++i)
        be_.sum_sq(grads[i], tensor{norms_.get(), i * 4, dtype::f32, {1, 1, 1, 1}});
    be_.download(*norms_, 0, host_norms_.data(), host_norms_.size() * 4);
    double sq = 0;
    for (float x : host_norms_) sq += double(x);
    const double norm = std::sqrt(sq);
    if (!std::isfinite(norm)) return norm;
    adamw_params p;
    p.beta1 = cfg_.beta1, p.beta2 = cfg_.beta2, p.eps = cfg_.eps, p.weight_decay = cfg_.weight_decay;
    p.grad_scale = cfg_.max_grad_norm > 0 && norm > cfg_.max_grad_norm ? float(cfg_.max_grad_norm / norm) : 1.f;
    p.step = int32_t(steps_ + 1);
    p.lr = learning_rate(cfg_, steps_ + 1);
    for (size_t i = 0; i < params_.size(); ++i) be_.adamw(params_[i], grads[i], m_[i], v_[i], p);
    ++steps_;
    return norm;
}

std::vector<float> adamw_optimizer::moments(bool second) const {
    std::vector<float> out;
    for (const auto& t : second ? v_ : m_) {
        const size_t at = out.size();
        out.resize(at + size_t(t.nelements()));
        be_.download(*t.buf, t.offset, out.data() + at, t.nbytes());
    }
    return out;
}

void adamw_optimizer::set_state(int64_t steps, const std::vector<float>& m, const std::vector<float>& v) {
    size_t n = 0;
    for (const auto& t : params_) n += size_t(t.nelements());
    if (m.size() != n || v.size() != n || steps < 0)
        throw error(TANDEM_ERR_FORMAT, "optimizer state does not match the adapter's parameters");
    size_t at = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
        be_.upload(*state_, m_[i].offset, m.data() + at, m_[i].nbytes());
        be_.upload(*state_, v_[i].offset, v.data() + at, v_[i].nbytes());
        at += size_t(params_[i].nelements());
    }
    steps_ = steps;
}

}  // namespace tandem
