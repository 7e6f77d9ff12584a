// Reductions: the kernels every backend implements (kernels/cpu/reduce.cpp,
// kernels/cuda/reduce.cu), declared once. Inputs may be strided; outputs are
// contiguous. Sums accumulate in a wider type in a fixed order, so a replayed
// forward reproduces them bit for bit: int64 for the integers, double for
// float64, and for float32 double on the CPU, float32 on CUDA (which also
// computes bfloat16/float16 in float32; on the CPU the op layer widens them).
#pragma once

#include <cstdint>
#include <vector>

#include "remat/core/tensor.h"

namespace remat::kernels {

struct ReduceKernels {
  // out (numel = product of the kept dims) = scale * sum of x over `dims`
  // (sorted, unique).
  void (*sum)(const Tensor& x, const std::vector<int64_t>& dims, double scale, const Tensor& out);
  // Max of x along dim: values and int64 indices (first maximum; a NaN wins,
  // the first one), both with dim removed.
  void (*max_along)(const Tensor& x, int64_t dim, const Tensor& values, const Tensor& indices);
  // out (zero-filled here) gets grad[i] at position indices[i] along dim;
  // grad and indices (int64) have out's shape with dim removed.
  void (*scatter_along)(const Tensor& grad, const Tensor& indices, int64_t dim, const Tensor& out);
};

namespace cpu {
extern const ReduceKernels reduce_kernels;
}
namespace cuda {
extern const ReduceKernels reduce_kernels;
}

}  // namespace remat::kernels
