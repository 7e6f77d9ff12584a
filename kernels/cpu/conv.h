// 2-d convolution on the CPU (NCHW): im2col + GEMM through OpenBLAS, with the
// column buffer built for a bounded chunk of the batch at a time so its size
// stays capped whatever the batch.
#pragma once

#include "kernels/conv.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// out [N, O, oH, oW] (contiguous) = x [N, C, H, W] convolved with
// weight [O, C/groups, kH, kW], plus bias [O] when bias is defined.
void conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p,
            const Tensor& out);
// grad_input [N, C, H, W] (contiguous) = col2im(weight^T . grad_out).
void conv2d_backward_input(const Tensor& grad_out, const Tensor& weight, const Conv2dParams& p,
                           const Tensor& grad_input);
// grad_weight [O, C/groups, kH, kW] (contiguous) = sum over the batch of
// grad_out . im2col(x)^T.
void conv2d_backward_weight(const Tensor& grad_out, const Tensor& x, const Conv2dParams& p,
                            const Tensor& grad_weight);

}  // namespace remat::kernels::cpu
