// Stochastic gradient descent with momentum: torch.optim.SGD (maximize=False).
#pragma once

#include <vector>

#include "remat/optim/optimizer.h"

namespace remat::optim {

// Defaults are PyTorch's. Fields are in PyTorch's argument order, so
// designated initializers read like its keyword arguments:
//   SGD sgd(model.parameters(), {.lr = 0.1, .momentum = 0.9, .nesterov = true});
struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;  // L2: added to the gradient
  bool nesterov = false;    // needs momentum > 0 and dampening == 0
};

// For each parameter p with gradient g (docs/optim.md has the derivation):
//   g = g + weight_decay * p
//   with momentum: b = g on the parameter's first step, else
//                  b = momentum * b + (1 - dampening) * g;
//                  g = nesterov ? g + momentum * b : b
//   p = p - lr * g
// One fused pass (the sgd_update op) in place over the parameter and its
// buffer; 16-bit parameters computed in float32 and rounded once on store,
// as torch.optim.SGD(fused=True) does.
class SGD : public PerParameterOptimizer {
 public:
  explicit SGD(std::vector<Tensor> params, SGDOptions options = {});

 private:
  void prepare(const Tensor& param, const Tensor& grad, PendingUpdate& next) override;
  void commit(Tensor& param, const Tensor& grad, const PendingUpdate& next) override;

  double momentum_;
  double dampening_;
  double weight_decay_;
  bool nesterov_;
};

}  // namespace remat::optim
