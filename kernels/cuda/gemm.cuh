// Matrix products on the GPU through cuBLAS, with the signature and semantics
// of kernels/cpu/gemm.h. float32 may run on TF32 tensor cores when
// remat::matmul_allow_tf32() (off by default); bfloat16 and float16
// accumulate in float32, float64 in float64.
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// out[..., M, N] = a[..., M, K] @ b[..., K, N] (+ bias[N] when defined: out
// starts as the bias and cuBLAS accumulates onto it); batch dims of a and b
// are broadcast to out's. Operands whose matrices have a unit stride in
// either dim and whose batch dims step by one stride go to cuBLAS as they are
// (transposed where needed); others are copied first. out must be contiguous.
void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out);
inline void matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  matmul(a, b, Tensor(), out);
}

}  // namespace remat::kernels::cuda
