// Reductions on the GPU, with the signatures and semantics of
// kernels/cpu/reduce.h. Sums accumulate in float32 for the float32 and 16-bit
// dtypes (double for float64, int64 for the integers) in a fixed order, so a
// replayed forward reproduces them bit for bit.
#pragma once

#include <vector>

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// out (contiguous, numel = product of the kept dims) = scale * sum of x over
// `dims` (sorted, unique).
void sum(const Tensor& x, const std::vector<int64_t>& dims, double scale, const Tensor& out);
// Max of x along dim: values and int64 indices (first maximum; a NaN wins,
// the first one), both contiguous with dim removed.
void max_along(const Tensor& x, int64_t dim, const Tensor& values, const Tensor& indices);
// out (contiguous, zero-filled here) gets grad[i] at position indices[i] along
// dim; grad and indices have out's shape with dim removed.
void scatter_along(const Tensor& grad, const Tensor& indices, int64_t dim, const Tensor& out);

}  // namespace remat::kernels::cuda
