// Gradient clipping by global norm: torch.nn.utils.clip_grad_norm_.
#pragma once

#include <vector>

#include "remat/core/tensor.h"

namespace remat::optim {

// The norm of every parameter's gradient taken together (as if concatenated
// into one vector), accumulated in float64; parameters without a gradient are
// skipped. norm_type is p > 0 or infinity (max |g|). Where
// max_norm / (total + 1e-6) < 1, every gradient is multiplied in place by that
// coefficient. Returns the total norm. A non-finite gradient makes the total
// NaN or infinite and, as in PyTorch, every gradient NaN or zero: check the
// result to skip such a step.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0);

// clip_grad_norm in its two halves, for a total norm put together elsewhere
// (distributed::clip_grad_norm adds up the ranks'): the norm it takes, and
// the scaling by max_norm / (total + 1e-6) where that is below 1 (or NaN).
double grad_norm(const std::vector<Tensor>& params, double norm_type = 2.0);
void clip_grads_to_norm(const std::vector<Tensor>& params, double max_norm, double total);

}  // namespace remat::optim
