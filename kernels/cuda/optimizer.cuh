// Optimizer kernels on the GPU, with the CPU kernels' contracts
// (kernels/cpu/optimizer.h): the fused Adam/AdamW update and the vector norm
// that gradient clipping sums.
#pragma once

#include "kernels/optimizer.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// One Adam/AdamW step on one parameter, in place on param, exp_avg and
// exp_avg_sq (same shape and dtype as param, float32 or float64, any strides),
// in one kernel. The CPU kernel's formula, operation order and rounding
// (products and sums rounded one by one, never fused), so both devices take
// the same step bit for bit.
void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                 const Tensor& exp_avg_sq, const AdamStep& step);

// ||x||_p accumulated in float64, for p > 0; p = infinity gives max |x|. A NaN
// element makes the result NaN. x may be float32, float64, bfloat16 or float16.
// Sums in a fixed order (the same value on every run) and synchronises with
// the device to return the value.
double vector_norm(const Tensor& x, double p);

}  // namespace remat::kernels::cuda
