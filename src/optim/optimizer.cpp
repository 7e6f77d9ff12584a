#include "remat/optim/optimizer.h"

#include <cmath>
#include <set>
#include <utility>

#include "remat/autograd.h"
#include "remat/core/grad_mode.h"
#include "remat/memory/memory.h"

namespace remat::optim {

Optimizer::Optimizer(std::string name, std::vector<Tensor> params, double lr)
    : name_(std::move(name)), params_(std::move(params)) {
  REMAT_CHECK(!params_.empty(), "{}: got an empty parameter list", name_);
  std::set<const TensorImpl*> seen;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    REMAT_CHECK(p.defined(), "{}: parameter {} is undefined", name_, i);
    REMAT_CHECK(is_floating(p.dtype()), "{}: parameter {} must be floating-point, got {}", name_, i,
                TensorMeta::of(p).str());
    REMAT_CHECK(p.is_leaf(),
                "{}: parameter {} ({}) is the result of an op; only leaf tensors can be optimized",
                name_, i, TensorMeta::of(p).str());
    REMAT_CHECK(seen.insert(p.impl_ptr().get()).second,
                "{}: parameter {} ({}) appears twice in the list; it would be updated twice", name_,
                i, TensorMeta::of(p).str());
  }
  set_lr(lr);
}

void Optimizer::check_index(size_t i) const {
  REMAT_CHECK(i < params_.size(), "{}: no parameter {} (it has {})", name_, i, params_.size());
}

PerParameterOptimizer::PerParameterOptimizer(std::string name, std::vector<Tensor> params,
                                             double lr)
    : Optimizer(std::move(name), std::move(params), lr), states_(parameters().size()) {}

void PerParameterOptimizer::step() {
  NoGradGuard no_grad;  // an update is not part of any graph
  memory::TagScope tag("optimizer");
  struct Step {
    size_t index;
    Tensor grad;
    PendingUpdate next;
  };
  std::vector<Step> steps;
  const std::vector<Tensor>& params = parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor grad = params[i].grad();
    if (!grad.defined()) continue;
    Step& s = steps.emplace_back(Step{i, std::move(grad), {states_[i]}});
    ++s.next.state.step;
    prepare(params[i], s.grad, s.next);
  }
  for (Step& s : steps) {
    Tensor param = params[s.index];  // a handle: commit writes the shared tensor
    commit(param, s.grad, s.next);
    states_[s.index] = std::move(s.next.state);
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  for (const Tensor& p : params_) remat::zero_grad(p, set_to_none);
}

void Optimizer::set_lr(double lr) {
  REMAT_CHECK(std::isfinite(lr) && lr >= 0, "{}: learning rate must be finite and >= 0, got {}",
              name_, lr);
  lr_ = lr;
}

const ParamState& PerParameterOptimizer::state(size_t i) const {
  check_index(i);
  return states_[i];
}

}  // namespace remat::optim
