#include "remat/optim/sgd.h"

#include "ops/registry.h"

namespace remat::optim {

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : PerParameterOptimizer("SGD", std::move(params), options.lr),
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

// The buffer is allocated on the first step (the kernel writes it whole);
// later steps allocate nothing.
void SGD::prepare(const Tensor& param, const Tensor& /*grad*/, PendingUpdate& next) {
  if (momentum_ != 0 && !next.state.momentum_buffer.defined()) {
    next.state.momentum_buffer = Tensor::empty(param.shape(), param.dtype(), param.device());
  }
}

// One fused kernel pass over the parameter and its buffer, in place.
void SGD::commit(Tensor& param, const Tensor& grad, const PendingUpdate& next) {
  const Tensor& buffer = next.state.momentum_buffer;
  std::vector<Tensor> operands{param, grad};
  if (momentum_ != 0) operands.push_back(buffer);
  ops::call(ops::op<"sgd_update">(), operands,
            ops::SgdUpdateAttrs{.lr = lr(),
                                .momentum = momentum_,
                                .dampening = dampening_,
                                .weight_decay = weight_decay_,
                                .nesterov = nesterov_,
                                .first_step = next.state.step == 1});
}

}  // namespace remat::optim
