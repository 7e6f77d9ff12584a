// The CPU kernels' entry to oneDNN (Debian's libdnnl-dev, what PyTorch itself
// uses on the CPU): bfloat16 matrix products, which oneDNN runs on AMX or
// AVX-512 BF16 with float32 accumulation. Built only where CMake found oneDNN
// (REMAT_WITH_ONEDNN); elsewhere the callers widen to float32 BLAS.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// One matrix of a product as oneDNN reads it: its first element and the
// strides of its two dims, in elements (a transposed operand is a column-major
// one, so any unit-stride layout goes in without a copy).
struct OnednnMatrix {
  const void* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 0;
};

// c [m, n] (contiguous, bfloat16) = a [m, k] @ b [k, n] (+ bias [n], strided,
// when given), in float32, rounded to bfloat16 once. Scratch memory comes
// from remat's allocator (counted in its peak). Returns false, having done
// nothing, when oneDNN is not built in or has no implementation for the
// machine; throws Error naming the shapes on a oneDNN failure.
bool onednn_bf16_gemm(int64_t m, int64_t n, int64_t k, const OnednnMatrix& a, const OnednnMatrix& b,
                      const void* bias, int64_t bias_stride, void* c);

}  // namespace remat::kernels::cpu
