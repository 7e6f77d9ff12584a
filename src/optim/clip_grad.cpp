#include "remat/optim/clip_grad.h"

#include <cmath>

#include "ops/optimizer.h"

namespace remat::optim {

double grad_norm(const std::vector<Tensor>& params, double norm_type) {
  REMAT_CHECK(norm_type > 0, "clip_grad_norm: norm_type must be positive or infinity, got {}",
              norm_type);
  std::vector<double> norms;
  for (const Tensor& p : params) {
    if (Tensor grad = p.grad(); grad.defined()) {
      norms.push_back(ops::vector_norm("clip_grad_norm", grad, norm_type));
    }
  }
  // The norm of the per-gradient norms, as PyTorch takes it.
  const Tensor per_grad = from_vector(norms, {static_cast<int64_t>(norms.size())});
  return ops::vector_norm("clip_grad_norm", per_grad, norm_type);
}

void clip_grads_to_norm(const std::vector<Tensor>& params, double max_norm, double total) {
  REMAT_CHECK(max_norm >= 0, "clip_grad_norm: max_norm must be >= 0, got {}", max_norm);
  const double clip_coef = max_norm / (total + 1e-6);
  // PyTorch clamps the coefficient to at most 1, and a NaN one passes the clamp.
  if (!(clip_coef < 1 || std::isnan(clip_coef))) return;
  for (const Tensor& p : params) {
    if (Tensor grad = p.grad(); grad.defined()) grad.mul_(clip_coef);
  }
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  REMAT_CHECK(max_norm >= 0, "clip_grad_norm: max_norm must be >= 0, got {}", max_norm);
  const double total = grad_norm(params, norm_type);
  clip_grads_to_norm(params, max_norm, total);
  return total;
}

}  // namespace remat::optim
