// Optimizer kernels on the CPU, float32 and float64: the fused Adam/AdamW
// update and the vector norm that gradient clipping sums. Elementwise work has
// no cross-element dependence, and the norm sums fixed-size chunks in a fixed
// order, so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "kernels/optimizer.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// One Adam/AdamW step on one parameter, in place on param, exp_avg and
// exp_avg_sq (same shape and dtype as param, any strides), in one pass:
//   g = grad (+ weight_decay * p unless decoupled);  p *= 1 - lr * wd if decoupled
//   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
//   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// Arithmetic runs in the parameter's dtype, as torch.optim.Adam's does.
void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                 const Tensor& exp_avg_sq, const AdamStep& step);

// ||x||_p accumulated in float64, for p > 0; p = infinity gives max |x|. A NaN
// element makes the result NaN. x may be float32, float64, bfloat16 or float16.
double vector_norm(const Tensor& x, double p);

}  // namespace remat::kernels::cpu
