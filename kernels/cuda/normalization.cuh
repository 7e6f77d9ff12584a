// LayerNorm and BatchNorm on the GPU, with the signatures and semantics of
// kernels/cpu/normalization.h. x, weight, bias and the gradients have x's
// dtype; the statistics (mean, rstd, invstd, running_mean, running_var) are
// float32 for bfloat16/float16 inputs and x's dtype otherwise. Statistics
// accumulate in float32 (float64 for float64) with Welford's update, merged
// with Chan's formula; every reduction runs in a fixed order (no atomics), so
// results are bitwise reproducible, as checkpoint replay needs.
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// x viewed as [rows, cols], cols the product of its last normalized_ndim
// dims: per row, mean and rstd = 1 / sqrt(biased variance + eps), and
// y = (x - mean) * rstd * weight + bias. weight and bias may be undefined.
void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t normalized_ndim,
                double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd);
// Gradients of layer_norm from the saved mean and rstd; an undefined weight
// counts as ones, and an undefined output is not computed.
void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                         const Tensor& mean, const Tensor& rstd, int64_t normalized_ndim,
                         const Tensor& dx, const Tensor& dweight, const Tensor& dbias);

// Batch statistics of x [N, C, ...] per channel: mean and invstd; running
// statistics, where defined, are updated in place through their strides
// (running_var with the unbiased variance).
void batch_norm_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& invstd,
                      const Tensor& running_mean, const Tensor& running_var, double momentum);
// Eval mode: mean = running_mean, invstd = 1 / sqrt(running_var + eps).
void batch_norm_running_stats(const Tensor& running_mean, const Tensor& running_var, double eps,
                              const Tensor& mean, const Tensor& invstd);
// y = (x - mean[c]) * invstd[c] * weight[c] + bias[c]; weight and bias may be
// undefined.
void batch_norm_apply(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                      const Tensor& weight, const Tensor& bias, const Tensor& y);
// Gradients of batch_norm; training: dx flows through the batch statistics
// too. An undefined weight counts as ones; an undefined output is not computed.
void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                         const Tensor& mean, const Tensor& invstd, bool training, const Tensor& dx,
                         const Tensor& dweight, const Tensor& dbias);

}  // namespace remat::kernels::cuda
