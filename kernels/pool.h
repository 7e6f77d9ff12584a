// 2-d pooling (NCHW): the kernels every backend implements
// (kernels/cpu/pool.cpp, kernels/cuda/pool.cu), declared once. Every operand
// is contiguous: the op layer makes the inputs so, and the kernels check.
// Padding counts as -inf for max (NaN wins) and as zeros in avg_pool2d's
// divisor (PyTorch's count_include_pad=true); adaptive bins are PyTorch's.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels {

// The window of a 2-d pooling.
struct Pool2dParams {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
};

struct PoolKernels {
  // values and indices [N, C, oH, oW]: each window's maximum and its flat
  // position in the H*W plane.
  void (*max_pool2d)(const Tensor& x, const Pool2dParams& p, const Tensor& values,
                     const Tensor& indices);
  // grad_input [N, C, H, W] (written whole) gets each output's gradient at
  // its recorded position, summed where windows overlap.
  void (*max_pool2d_backward)(const Tensor& grad_out, const Tensor& indices,
                              const Tensor& grad_input);
  // Window means, and their gradient spread evenly over each window.
  void (*avg_pool2d)(const Tensor& x, const Pool2dParams& p, const Tensor& out);
  void (*avg_pool2d_backward)(const Tensor& grad_out, const Pool2dParams& p,
                              const Tensor& grad_input);
  // Output i of n over an input of size s averages [floor(i*s/n),
  // ceil((i+1)*s/n)). Sizes come from the operands' shapes.
  void (*adaptive_avg_pool2d)(const Tensor& x, const Tensor& out);
  void (*adaptive_avg_pool2d_backward)(const Tensor& grad_out, const Tensor& grad_input);
};

namespace cpu {
extern const PoolKernels pool_kernels;
}
namespace cuda {
extern const PoolKernels pool_kernels;
}

}  // namespace remat::kernels
