// Optimizer kernels: the fused Adam/AdamW update and the vector norm that
// gradient clipping sums, which every backend implements
// (kernels/cpu/optimizer.cpp, kernels/cuda/optimizer.cu), declared once.
// Both devices compute in the same order with the same rounding, and
// reductions run in a fixed order, so results do not depend on the thread
// count.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels {

// The hyperparameters of one Adam/AdamW step.
struct AdamStep {
  double lr = 0;
  double beta1 = 0;
  double beta2 = 0;
  double eps = 0;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;  // AdamW: p *= 1 - lr * wd; Adam: g += wd * p
  int64_t step = 1;                     // this update's count, from 1 (bias correction)
};

// The hyperparameters of one SGD step (torch.optim.SGD's rule).
struct SgdStep {
  double lr = 0;
  double momentum = 0;  // 0: no buffer
  double dampening = 0;
  double weight_decay = 0;  // L2: added to the gradient
  bool nesterov = false;
  bool first_step = false;  // the buffer starts as the direction, not a fraction of it
};

struct OptimizerKernels {
  // One Adam/AdamW step on one parameter, in place on param, exp_avg and
  // exp_avg_sq (same shape and dtype as param, any floating dtype, any
  // strides), in one pass:
  //   g = grad (+ weight_decay * p unless decoupled);  p *= 1 - lr * wd if decoupled
  //   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
  //   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
  // Arithmetic runs in the parameter's dtype (float for the 16-bit ones,
  // rounded once on store), as torch.optim.Adam's does; products and sums
  // are rounded one by one, never fused, so both devices take the same step
  // bit for bit.
  void (*adam_update)(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                      const Tensor& exp_avg_sq, const AdamStep& step);
  // One SGD step on one parameter, in place on param and (with momentum)
  // the buffer, in one pass:
  //   d = grad (+ weight_decay * p)
  //   with momentum: b = d on the first step, else b = momentum * b + (1 - dampening) * d;
  //                  d = nesterov ? d + momentum * b : b
  //   p -= lr * d
  // momentum_buffer is undefined without momentum (and unread on the first
  // step, where it is only written). Same arithmetic rules as adam_update.
  void (*sgd_update)(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer,
                     const SgdStep& step);
  // ||x||_p accumulated in float64, for p > 0; p = infinity gives max |x|. A
  // NaN element makes the result NaN. x (contiguous) may be float32, float64,
  // bfloat16 or float16. CUDA synchronises with the device to return it.
  double (*vector_norm)(const Tensor& x, double p);
};

namespace cpu {
extern const OptimizerKernels optimizer_kernels;
}
namespace cuda {
extern const OptimizerKernels optimizer_kernels;
}

}  // namespace remat::kernels
