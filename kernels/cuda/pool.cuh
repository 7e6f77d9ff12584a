// 2-d pooling on the GPU (NCHW), with the CPU kernels' semantics: padding is
// -inf for max (NaN wins) and counts in avg_pool2d's divisor; adaptive bins
// are PyTorch's.
#pragma once

#include "kernels/pool.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// values and indices [N, C, oH, oW] (contiguous): each window's maximum and
// its flat position in the H*W plane.
void max_pool2d(const Tensor& x, const Pool2dParams& p, const Tensor& values,
                const Tensor& indices);
// grad_input [N, C, H, W] (contiguous, zeroed here) gets each output's
// gradient at its recorded position, summed where windows overlap.
void max_pool2d_backward(const Tensor& grad_out, const Tensor& indices, const Tensor& grad_input);

void avg_pool2d(const Tensor& x, const Pool2dParams& p, const Tensor& out);
void avg_pool2d_backward(const Tensor& grad_out, const Pool2dParams& p, const Tensor& grad_input);

void adaptive_avg_pool2d(const Tensor& x, const Tensor& out);
void adaptive_avg_pool2d_backward(const Tensor& grad_out, const Tensor& grad_input);

}  // namespace remat::kernels::cuda
