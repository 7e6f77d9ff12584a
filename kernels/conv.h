// 2-d convolution (NCHW): the kernels every backend implements
// (kernels/cpu/conv.cpp: im2col + GEMM through OpenBLAS, in chunks of the
// batch that cap the column buffer; kernels/cuda/conv.cu: cuDNN), declared
// once. Every operand is contiguous: the op layer makes the inputs so, and
// the kernels check.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels {

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
};

struct ConvKernels {
  // out [N, O, oH, oW] = x [N, C, H, W] convolved with
  // weight [O, C/groups, kH, kW], plus bias [O] when bias is defined.
  void (*conv2d)(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p,
                 const Tensor& out);
  // grad_input [N, C, H, W] = col2im(weight^T . grad_out).
  void (*backward_input)(const Tensor& grad_out, const Tensor& weight, const Conv2dParams& p,
                         const Tensor& grad_input);
  // grad_weight [O, C/groups, kH, kW] = sum over the batch of
  // grad_out . im2col(x)^T.
  void (*backward_weight)(const Tensor& grad_out, const Tensor& x, const Conv2dParams& p,
                          const Tensor& grad_weight);
};

namespace cpu {
extern const ConvKernels conv_kernels;
}
namespace cuda {
extern const ConvKernels conv_kernels;
}

}  // namespace remat::kernels
