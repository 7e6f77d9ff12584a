// ZeroRedundancyOptimizer: ZeRO stage 1, optimizer state sharded by
// parameter across the ranks.
#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "distributed/backend.h"
#include "remat/core/grad_mode.h"
#include "remat/distributed.h"

namespace remat::distributed {

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::vector<Tensor> params, Factory make,
                                                 ProcessGroup& group)
    : group_(group), params_(std::move(params)) {
  REMAT_CHECK(!params_.empty(), "ZeroRedundancyOptimizer: no parameters");
  REMAT_CHECK(make != nullptr, "ZeroRedundancyOptimizer: no optimizer factory");
  for (const Tensor& p : params_) {
    REMAT_CHECK(p.is_contiguous(), "ZeroRedundancyOptimizer: parameter {} is not contiguous",
                TensorMeta::of(p).str());
  }
  // Largest first, each to the rank holding the fewest bytes so far (ties to
  // the lowest rank): a deterministic partition every rank computes alike.
  std::vector<size_t> order(params_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return params_[a].nbytes() > params_[b].nbytes(); });
  std::vector<int64_t> load(static_cast<size_t>(group_.size()), 0);
  owner_.resize(params_.size());
  for (size_t i : order) {
    const auto least = std::min_element(load.begin(), load.end());
    owner_[i] = static_cast<int>(least - load.begin());
    *least += params_[i].nbytes();
  }
  // step()'s broadcasts pair parameters up by position.
  detail::check_same_parameters(group_, params_, "ZeroRedundancyOptimizer");
  std::vector<Tensor> mine;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (owner_[i] == group_.rank()) mine.push_back(params_[i]);
  }
  if (!mine.empty()) local_ = make(std::move(mine));
  // Rank 0 owns the largest parameter, so it has an optimizer to read the
  // rate from; a rank that owns nothing reports rank 0's.
  Tensor lr = from_vector(std::vector<double>{local_ ? local_->lr() : 0.0}, {1});
  group_.broadcast(lr, 0);
  lr_ = lr.item<double>();
}

void ZeroRedundancyOptimizer::step() {
  if (local_) local_->step();
  // Each parameter from its owner, all in flight at once.
  NoGradGuard no_grad;
  std::vector<Work> works;
  works.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    works.push_back(group_.broadcast_async(params_[i].detach(), owner_[i]));
  }
  for (Work& w : works) w.wait();
}

void ZeroRedundancyOptimizer::zero_grad(bool set_to_none) {
  for (const Tensor& p : params_) remat::zero_grad(p, set_to_none);
}

double ZeroRedundancyOptimizer::lr() const { return lr_; }

void ZeroRedundancyOptimizer::set_lr(double lr) {
  if (local_) local_->set_lr(lr);
  lr_ = lr;
}

int64_t optimizer_state_bytes(const optim::Optimizer& optimizer) {
  int64_t bytes = 0;
  for (size_t i = 0; i < optimizer.parameters().size(); ++i) {
    const optim::ParamState& s = optimizer.state(i);
    for (const Tensor* t : {&s.momentum_buffer, &s.exp_avg, &s.exp_avg_sq}) {
      if (t->defined()) bytes += t->nbytes();
    }
  }
  return bytes;
}

int64_t ZeroRedundancyOptimizer::local_state_bytes() const {
  return local_ ? optimizer_state_bytes(*local_) : 0;
}

}  // namespace remat::distributed
