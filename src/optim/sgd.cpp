#include "remat/optim/sgd.h"

#include "remat/ops.h"

namespace remat::optim {

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer("SGD", std::move(params), options.lr),
      momentum_(options.momentum),
      dampening_(options.dampening),
      weight_decay_(options.weight_decay),
      nesterov_(options.nesterov) {
  REMAT_CHECK(momentum_ >= 0, "SGD: momentum must be >= 0, got {}", momentum_);
  REMAT_CHECK(weight_decay_ >= 0, "SGD: weight_decay must be >= 0, got {}", weight_decay_);
  REMAT_CHECK(!nesterov_ || (momentum_ > 0 && dampening_ == 0),
              "SGD: nesterov needs momentum > 0 and dampening == 0, got momentum {} and "
              "dampening {}",
              momentum_, dampening_);
}

// The new buffer and value are computed on fresh tensors, rounded as an
// update in place would round them; commit() only copies the value in.
void SGD::prepare(const Tensor& param, const Tensor& grad, PendingUpdate& next) {
  Tensor direction = weight_decay_ != 0 ? grad + param * weight_decay_ : grad;
  if (momentum_ != 0) {
    Tensor& buffer = next.state.momentum_buffer;
    if (!buffer.defined()) {
      buffer = direction.clone();  // direction may be the gradient itself
    } else {
      buffer = (buffer * momentum_).add_(direction, 1 - dampening_);
    }
    direction = nesterov_ ? direction + buffer * momentum_ : buffer;
  }
  next.value = param.clone();
  next.value.add_(direction, -lr());
}

void SGD::commit(Tensor& param, const Tensor& /*grad*/, const PendingUpdate& next) {
  param.copy_(next.value);
}

}  // namespace remat::optim
