#include "remat/optim/adam.h"

#include "ops/registry.h"

namespace remat::optim {

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Adam("Adam", std::move(params), options, /*default_weight_decay=*/0,
           /*decoupled_weight_decay=*/false) {}

Adam::Adam(std::string name, std::vector<Tensor> params, const AdamOptions& options,
           double default_weight_decay, bool decoupled_weight_decay)
    : PerParameterOptimizer(std::move(name), std::move(params), options.lr),
      beta1_(options.beta1),
      beta2_(options.beta2),
      eps_(options.eps),
      weight_decay_(options.weight_decay.value_or(default_weight_decay)),
      decoupled_weight_decay_(decoupled_weight_decay) {
  REMAT_CHECK(beta1_ >= 0 && beta1_ < 1, "{}: beta1 must be in [0, 1), got {}", this->name(),
              beta1_);
  REMAT_CHECK(beta2_ >= 0 && beta2_ < 1, "{}: beta2 must be in [0, 1), got {}", this->name(),
              beta2_);
  REMAT_CHECK(eps_ >= 0, "{}: eps must be >= 0, got {}", this->name(), eps_);
  REMAT_CHECK(weight_decay_ >= 0, "{}: weight_decay must be >= 0, got {}", this->name(),
              weight_decay_);
}

// The moments start at zero on the first step; later steps allocate nothing.
void Adam::prepare(const Tensor& param, const Tensor& /*grad*/, PendingUpdate& next) {
  if (!next.state.exp_avg.defined()) {
    next.state.exp_avg = zeros_like(param);
    next.state.exp_avg_sq = zeros_like(param);
  }
}

// One fused kernel pass over the parameter and its moments, in place.
void Adam::commit(Tensor& param, const Tensor& grad, const PendingUpdate& next) {
  const ParamState& state = next.state;
  ops::call(ops::op<"adam_update">(), {param, grad, state.exp_avg, state.exp_avg_sq},
            ops::AdamUpdateAttrs{.lr = lr(),
                                 .beta1 = beta1_,
                                 .beta2 = beta2_,
                                 .eps = eps_,
                                 .weight_decay = weight_decay_,
                                 .decoupled_weight_decay = decoupled_weight_decay_,
                                 .step = state.step});
}

AdamW::AdamW(std::vector<Tensor> params, AdamOptions options)
    : Adam("AdamW", std::move(params), options, /*default_weight_decay=*/1e-2,
           /*decoupled_weight_decay=*/true) {}

}  // namespace remat::optim
