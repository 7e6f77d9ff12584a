// Matrix products on the CPU through OpenBLAS.
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// out[..., M, N] = a[..., M, K] @ b[..., K, N] (+ bias[N] when defined, added
// by BLAS itself: out starts as the bias); batch dims of a and b are
// broadcast to out's. Strided operands whose matrices have a unit stride in
// either dim go to BLAS as they are (transposed where needed); others are
// copied to contiguous first. out must be contiguous.
void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out);
inline void matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  matmul(a, b, Tensor(), out);
}

}  // namespace remat::kernels::cpu
