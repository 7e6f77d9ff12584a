// Adam and AdamW: torch.optim.Adam and torch.optim.AdamW (amsgrad=False,
// maximize=False), each parameter updated by one fused kernel pass.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "remat/optim/optimizer.h"

namespace remat::optim {

// Defaults are PyTorch's:
//   AdamW opt(model.parameters(), {.lr = 3e-4, .beta2 = 0.95, .weight_decay = 0.1});
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;    // in [0, 1)
  double beta2 = 0.999;  // in [0, 1)
  double eps = 1e-8;
  // Unset: PyTorch's default for the class, 0 for Adam and 1e-2 for AdamW.
  std::optional<double> weight_decay;
};

// For each parameter p with gradient g, at its step t (from 1):
//   Adam:  g = g + weight_decay * p          AdamW: p = p * (1 - lr * weight_decay)
//   m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2   (both start at 0)
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The state takes the parameter's dtype. The update runs in float64 for
// float64 parameters and in float32 otherwise; bfloat16 and float16
// parameters and state are rounded once on store, as PyTorch's fused Adam.
class Adam : public PerParameterOptimizer {
 public:
  explicit Adam(std::vector<Tensor> params, AdamOptions options = {});

 protected:
  // decoupled_weight_decay: AdamW's rule.
  Adam(std::string name, std::vector<Tensor> params, const AdamOptions& options,
       double default_weight_decay, bool decoupled_weight_decay);

 private:
  void prepare(const Tensor& param, const Tensor& grad, PendingUpdate& next) override;
  void commit(Tensor& param, const Tensor& grad, const PendingUpdate& next) override;

  double beta1_;
  double beta2_;
  double eps_;
  double weight_decay_;
  bool decoupled_weight_decay_;
};

// Adam with decoupled weight decay (Loshchilov & Hutter): the decay shrinks the
// parameter directly instead of entering the moments through the gradient.
class AdamW : public Adam {
 public:
  explicit AdamW(std::vector<Tensor> params, AdamOptions options = {});
};

}  // namespace remat::optim
