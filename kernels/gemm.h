// Matrix products: the kernel every backend implements (kernels/cpu/gemm.cpp
// through OpenBLAS and oneDNN, kernels/cuda/gemm.cu through cuBLAS),
// declared once. Both take float32, float64, bfloat16 and float16, the
// 16-bit types accumulated in float32 and rounded once (the CPU: bfloat16
// through oneDNN's matmul where built in, otherwise float32 copies through
// BLAS); float32 may run on TF32 tensor cores when remat::matmul_allow_tf32()
// (off by default).
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
