// LayerNorm and BatchNorm: the kernels every backend implements
// (kernels/cpu/normalization.cpp, kernels/cuda/normalization.cu), declared
// once. x, grad, weight, bias and the saved statistics (mean, rstd, invstd)
// are contiguous, as are the outputs: the op layer makes the inputs so, and
// the kernels check. running_mean and running_var may be strided: they are
// read and updated in place through their strides. Outputs left undefined
// are not computed; an undefined weight counts as ones, an undefined bias as
// zeros.
//
// x, weight, bias and the gradients have x's dtype; the statistics (mean,
// rstd, invstd, running_mean, running_var) too, except that CUDA keeps them
// in float32 for bfloat16/float16 inputs (on the CPU the op layer widens
// those). The CPU accumulates statistics in float64 in one pass, shifted by
// the first value of each row or channel so a large mean does not cancel the
// variance away; CUDA in float32 (float64 for float64) with Welford's update,
// merged with Chan's formula. Every reduction runs in a fixed order (no
// atomics, nothing that depends on the thread count), so results are bitwise
// reproducible, as checkpoint replay needs.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels {

struct NormalizationKernels {
  // x viewed as [rows, cols], cols the product of its last normalized_ndim
  // dims: per row, mean and rstd = 1 / sqrt(biased variance + eps) (rows
  // values each), and y = (x - mean) * rstd * weight + bias (weight and bias
  // [cols] values each).
  void (*layer_norm)(const Tensor& x, const Tensor& weight, const Tensor& bias,
                     int64_t normalized_ndim, double eps, const Tensor& y, const Tensor& mean,
                     const Tensor& rstd);
  // Gradients of layer_norm from the saved mean and rstd.
  void (*layer_norm_backward)(const Tensor& grad, const Tensor& x, const Tensor& weight,
                              const Tensor& mean, const Tensor& rstd, int64_t normalized_ndim,
                              const Tensor& dx, const Tensor& dweight, const Tensor& dbias);
  // Batch statistics of x [N, C, ...] per channel: mean and
  // invstd = 1 / sqrt(biased variance + eps). Where running_mean/running_var
  // are defined they are updated: running = (1 - momentum) * running +
  // momentum * batch statistic, with the unbiased variance for running_var.
  void (*batch_norm_stats)(const Tensor& x, double eps, const Tensor& mean, const Tensor& invstd,
                           const Tensor& running_mean, const Tensor& running_var, double momentum);
  // Eval mode: mean = running_mean, invstd = 1 / sqrt(running_var + eps).
  void (*batch_norm_running_stats)(const Tensor& running_mean, const Tensor& running_var,
                                   double eps, const Tensor& mean, const Tensor& invstd);
  // y = (x - mean[c]) * invstd[c] * weight[c] + bias[c].
  void (*batch_norm_apply)(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                           const Tensor& weight, const Tensor& bias, const Tensor& y);
  // Gradients of batch_norm. training: mean and invstd are batch statistics
  // (dx flows through them too); otherwise they are constants
  // (dx = g * weight * invstd).
  void (*batch_norm_backward)(const Tensor& grad, const Tensor& x, const Tensor& weight,
                              const Tensor& mean, const Tensor& invstd, bool training,
                              const Tensor& dx, const Tensor& dweight, const Tensor& dbias);
};

namespace cpu {
extern const NormalizationKernels normalization_kernels;
}
namespace cuda {
extern const NormalizationKernels normalization_kernels;
}

}  // namespace remat::kernels
