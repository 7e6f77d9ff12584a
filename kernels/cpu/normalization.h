// LayerNorm and BatchNorm on the CPU, float32 and float64. Statistics
// accumulate in float64 in one pass, shifted by the first value of each row or
// channel so a large mean does not cancel the variance away. Every reduction
// runs in a fixed order on one thread, so results do not depend on the thread
// count (checkpoint replay must reproduce them bit for bit).
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// x viewed as [rows, cols], cols the product of its last normalized_ndim
// dims: per row, mean and rstd = 1 / sqrt(biased variance + eps) (rows values
// each), and y = (x - mean) * rstd * weight + bias. weight and bias ([cols]
// values each) may be undefined: no scale, no shift.
void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t normalized_ndim,
                double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd);
// Gradients of layer_norm from the saved mean and rstd; an undefined weight
// counts as ones, and an undefined output is not computed.
void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                         const Tensor& mean, const Tensor& rstd, int64_t normalized_ndim,
                         const Tensor& dx, const Tensor& dweight, const Tensor& dbias);

// Batch statistics of x [N, C, ...] per channel: mean and
// invstd = 1 / sqrt(biased variance + eps). Where running_mean/running_var are
// defined they are updated in place: running = (1 - momentum) * running +
// momentum * batch statistic, with the unbiased variance for running_var.
void batch_norm_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& invstd,
                      const Tensor& running_mean, const Tensor& running_var, double momentum);
// Eval mode: mean = running_mean, invstd = 1 / sqrt(running_var + eps).
void batch_norm_running_stats(const Tensor& running_mean, const Tensor& running_var, double eps,
                              const Tensor& mean, const Tensor& invstd);
// y = (x - mean[c]) * invstd[c] * weight[c] + bias[c]; weight and bias may be
// undefined (no scale, no shift).
void batch_norm_apply(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                      const Tensor& weight, const Tensor& bias, const Tensor& y);
// Gradients of batch_norm. training: mean and invstd are batch statistics (dx
// flows through them too); otherwise they are constants (dx = g * weight *
// invstd). An undefined weight counts as ones; an undefined output is not
// computed.
void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                         const Tensor& mean, const Tensor& invstd, bool training, const Tensor& dx,
                         const Tensor& dweight, const Tensor& dbias);

}  // namespace remat::kernels::cpu
