// 2-d pooling on the CPU (NCHW). Each (n, c) plane is independent, so the
// kernels run planes in parallel and backward accumulates without atomics.
#pragma once

#include "kernels/pool.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// values and indices [N, C, oH, oW] (contiguous): each window's maximum
// (padding counts as -inf; NaN wins) and its flat position in the H*W plane.
void max_pool2d(const Tensor& x, const Pool2dParams& p, const Tensor& values,
                const Tensor& indices);
// grad_input [N, C, H, W] (contiguous, zeroed here) gets each output's
// gradient at its recorded position, summed where windows overlap.
void max_pool2d_backward(const Tensor& grad_out, const Tensor& indices, const Tensor& grad_input);

// Window means; padding counts as zeros in the kernel_h*kernel_w divisor
// (PyTorch's count_include_pad=true).
void avg_pool2d(const Tensor& x, const Pool2dParams& p, const Tensor& out);
void avg_pool2d_backward(const Tensor& grad_out, const Pool2dParams& p, const Tensor& grad_input);

// PyTorch's bins: output i of n over an input of size s averages
// [floor(i*s/n), ceil((i+1)*s/n)). Sizes come from the operands' shapes.
void adaptive_avg_pool2d(const Tensor& x, const Tensor& out);
void adaptive_avg_pool2d_backward(const Tensor& grad_out, const Tensor& grad_input);

}  // namespace remat::kernels::cpu
