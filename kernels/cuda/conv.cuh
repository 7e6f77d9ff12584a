// 2-d convolution on the GPU (NCHW) through cuDNN: forward (plus bias) and
// the gradients of the input and of the weight.
#pragma once

#include "kernels/conv.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// out [N, O, oH, oW] (contiguous) = x [N, C, H, W] convolved with
// weight [O, C/groups, kH, kW], plus bias [O] when bias is defined.
void conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p,
            const Tensor& out);
// grad_input [N, C, H, W] (contiguous) from grad_out [N, O, oH, oW] and the weight.
void conv2d_backward_input(const Tensor& grad_out, const Tensor& weight, const Conv2dParams& p,
                           const Tensor& grad_input);
// grad_weight [O, C/groups, kH, kW] (contiguous), summed over the batch.
void conv2d_backward_weight(const Tensor& grad_out, const Tensor& x, const Conv2dParams& p,
                            const Tensor& grad_weight);

}  // namespace remat::kernels::cuda
