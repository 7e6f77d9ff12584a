// A contiguous copy for CPU kernels whose fast path wants dense operands
// (BLAS, oneDNN): the copy is a tensor of the caching allocator, so it
// counts in the statistics and limits like any other.
#pragma once

#include "kernels/elementwise.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// t itself when contiguous, else a contiguous copy.
inline Tensor contiguous_copy(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
  elementwise_kernels.copy(t, c);
  return c;
}

}  // namespace remat::kernels::cpu
