#include "remat/optim/clip_grad.h"

#include <cmath>

#include "ops/optimizer.h"

namespace remat::optim {

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  REMAT_CHECK(max_norm >= 0, "clip_grad_norm: max_norm must be >= 0, got {}", max_norm);
  REMAT_CHECK(norm_type > 0, "clip_grad_norm: norm_type must be positive or infinity, got {}",
              norm_type);
  std::vector<Tensor> grads;
  std::vector<double> norms;
  for (const Tensor& p : params) {
    Tensor grad = p.grad();
    if (!grad.defined()) continue;
    norms.push_back(ops::vector_norm("clip_grad_norm", grad, norm_type));
    grads.push_back(grad);
  }
  // The norm of the per-gradient norms, as PyTorch takes it.
  const Tensor per_grad = from_vector(norms, {static_cast<int64_t>(norms.size())});
  const double total = ops::vector_norm("clip_grad_norm", per_grad, norm_type);
  const double clip_coef = max_norm / (total + 1e-6);
  // PyTorch clamps the coefficient to at most 1, and a NaN one passes the clamp.
  if (clip_coef < 1 || std::isnan(clip_coef)) {
    for (Tensor& grad : grads) grad.mul_(clip_coef);
  }
  return total;
}

}  // namespace remat::optim
