// Matrix products: the kernel every backend implements (kernels/cpu/gemm.cpp
// through OpenBLAS, kernels/cuda/gemm.cu through cuBLAS), declared once. The
// CPU computes float32 and float64; CUDA also bfloat16 and float16
// (accumulated in float32), and float32 may run on TF32 tensor cores when
// remat::matmul_allow_tf32() (off by default).
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels {

struct GemmKernels {
  // out[..., M, N] = a[..., M, K] @ b[..., K, N] (+ bias[N] when defined: out
  // starts as the bias and BLAS accumulates onto it); batch dims of a and b
  // are broadcast to out's. Operands whose matrices have a unit stride in
  // either dim (CUDA: and whose batch dims step by one stride) go to BLAS as
  // they are, transposed where needed; others are copied first. bias may be
  // strided; out must be contiguous.
  void (*matmul)(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out);
};

namespace cpu {
extern const GemmKernels gemm_kernels;
}
namespace cuda {
extern const GemmKernels gemm_kernels;
}

}  // namespace remat::kernels
