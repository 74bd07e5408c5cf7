// AdamW over a list of parameter tensors on one backend: moment state (m, v) on the backend, global-norm gradient
// clipping (one download of the per-tensor squared norms per step) and the learning-rate schedule.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/backend.h"

namespace tandem {

enum class lr_schedule { constant, cosine };

struct optimizer_config {
    float lr = 1e-3f;  // peak learning rate
    float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
    float weight_decay = 0.f;   // decoupled (AdamW), applied to every parameter
    float max_grad_norm = 1.f;  // global L2 norm clip; <= 0: no clipping
    lr_schedule schedule = lr_schedule::cosine;
    int64_t warmup_steps = 0;  // linear warm-up from lr / (warmup + 1) to lr
    int64_t total_steps = 0;   // cosine: decays to min_lr_ratio * lr at this step
    float min_lr_ratio = 0.1f;
};

// The learning rate of (1-based) step `step`.
float learning_rate(const optimizer_config& c, int64_t step);

class adamw_optimizer {
 public:
    // params: the tensors updated in place (f32, on `be`). Moments start at zero.
    adamw_optimizer(backend& be, std::vector<tensor> params, const optimizer_config& cfg);
    ~adamw_optimizer();
    adamw_optimizer(const adamw_optimizer&) = delete;
    adamw_optimizer& operator=(const adamw_optimizer&) = delete;

    // One step with gradients grads[i] (shape of params[i]). Returns the global gradient norm before clipping.
    // A non-finite norm skips the update (the step counter does not advance) and is returned as is.
    double step(const std::vector<tensor>& grads);
    // Steps taken so far (the next step is steps() + 1).
    int64_t steps() const { return steps_; }
    const optimizer_config& config() const { return cfg_; }

    // Moment state for checkpoints: m and v of every parameter, concatenated in parameter order.
    std::vector<float> moments(bool second) const;
    void set_state(int64_t steps, const std::vector<float>& m, const std::vector<float>& v);
    const std::vector<tensor>& params() const { return params_; }

 private:
    backend& be_;
    std::vector<tensor> params_, m_, v_;
    optimizer_config cfg_;
    int64_t steps_ = 0;
    std::unique_ptr<buffer> state_, norms_;
    std::vector<float> host_norms_;
};

}  // namespace tandem
