// The CPU kernels' entry to oneDNN (Debian's libdnnl-dev, what PyTorch itself
// uses on the CPU): float32 and bfloat16 matrix products, bfloat16 on AMX or
// AVX-512 BF16 with float32 accumulation. Built only where CMake found oneDNN
// (REMAT_WITH_ONEDNN); elsewhere the callers use OpenBLAS.
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

// c [m, n] (contiguous) = a [m, k] @ b [k, n] (+ bias [n], contiguous: oneDNN
// reads a bias densely whatever strides it is given, when given), every operand of `dtype` (float32
// or bfloat16), accumulated in float32 and rounded to dtype once. Scratch memory comes from remat's
// allocator (counted in its peak). Returns false, having done nothing, when
// oneDNN is not built in or has no implementation for the dtype on this
// machine; throws Error naming the shapes on a oneDNN failure.
bool onednn_gemm(DType dtype, int64_t m, int64_t n, int64_t k, const OnednnMatrix& a,
                 const OnednnMatrix& b, const void* bias, void* c);

}  // namespace remat::kernels::cpu
