// ZeroRedundancyOptimizer: ZeRO stage 1, optimizer state sharded by
// parameter across the ranks; and the gradient clipping that ZeRO-2's
// sharded gradients need.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "distributed/backend.h"
#include "remat/core/grad_mode.h"
#include "remat/distributed.h"
#include "remat/optim/clip_grad.h"

namespace remat::distributed {

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::vector<Tensor> params, Factory make,
                                                 ProcessGroup& group)
    : Optimizer("ZeroRedundancyOptimizer", std::move(params), /*lr=*/0), group_(group) {
  REMAT_CHECK(make != nullptr, "ZeroRedundancyOptimizer: no optimizer factory");
  const std::vector<Tensor>& all = parameters();
  for (const Tensor& p : all) {
    REMAT_CHECK(p.is_contiguous(), "ZeroRedundancyOptimizer: parameter {} is not contiguous",
                TensorMeta::of(p).str());
  }
  // Largest first, each to the rank holding the fewest bytes so far (ties to
  // the lowest rank): a deterministic partition every rank computes alike.
  std::vector<size_t> order(all.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return all[a].nbytes() > all[b].nbytes(); });
  std::vector<int64_t> load(static_cast<size_t>(group_.size()), 0);
  owner_.resize(all.size());
  for (size_t i : order) {
    const auto least = std::min_element(load.begin(), load.end());
    owner_[i] = static_cast<int>(least - load.begin());
    *least += all[i].nbytes();
  }
  // step()'s broadcasts pair parameters up by position.
  detail::check_same_parameters(group_, all, "ZeroRedundancyOptimizer");
  std::vector<Tensor> mine;
  local_index_.assign(all.size(), 0);
  for (size_t i = 0; i < all.size(); ++i) {
    if (owner_[i] != group_.rank()) continue;
    local_index_[i] = mine.size();
    mine.push_back(all[i]);
  }
  if (!mine.empty()) local_ = make(std::move(mine));
  // Rank 0 owns the largest parameter, so it has an optimizer to read the
  // rate from; every rank starts from it.
  Tensor lr = from_vector(std::vector<double>{local_ ? local_->lr() : 0.0}, {1});
  group_.broadcast(lr, 0);
  set_lr(lr.item<double>());
}

void ZeroRedundancyOptimizer::step() {
  if (local_) {
    local_->set_lr(lr());  // a scheduler sets this optimizer's rate
    local_->step();
  }
  // Each parameter from its owner, all in flight at once.
  NoGradGuard no_grad;
  const std::vector<Tensor>& all = parameters();
  std::vector<Work> works;
  works.reserve(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    works.push_back(group_.broadcast_async(all[i].detach(), owner_[i]));
  }
  for (Work& w : works) w.wait();
}

const optim::ParamState& ZeroRedundancyOptimizer::state(size_t i) const {
  check_index(i);
  static const optim::ParamState kHeldElsewhere;
  return owner_[i] == group_.rank() ? local_->state(local_index_[i]) : kHeldElsewhere;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, ProcessGroup& group,
                      double norm_type) {
  REMAT_CHECK(max_norm >= 0, "clip_grad_norm: max_norm must be >= 0, got {}", max_norm);
  const double local = optim::grad_norm(params, norm_type);
  // The p-norm of the ranks' p-norms: their p-th powers summed, or the
  // largest for the infinity norm.
  const bool infinity = std::isinf(norm_type);
  Tensor part =
      from_vector(std::vector<double>{infinity ? local : std::pow(local, norm_type)}, {1});
  group.all_reduce(part, infinity ? ReduceOp::kMax : ReduceOp::kSum);
  const double total =
      infinity ? part.item<double>() : std::pow(part.item<double>(), 1 / norm_type);
  optim::clip_grads_to_norm(params, max_norm, total);
  return total;
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

}  // namespace remat::distributed
