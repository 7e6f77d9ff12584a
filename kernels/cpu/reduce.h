// Reductions on the CPU. Float32 sums accumulate in float64.
#pragma once

#include <vector>

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// out (contiguous, numel = product of the kept dims) = scale * sum of x over
// `dims` (sorted, unique).
void sum(const Tensor& x, const std::vector<int64_t>& dims, double scale, const Tensor& out);
// Max of x along dim: values and int64 indices (first maximum), both
// contiguous with dim removed.
void max_along(const Tensor& x, int64_t dim, const Tensor& values, const Tensor& indices);

}  // namespace remat::kernels::cpu

namespace remat::kernels::cpu {
// out (contiguous, zero-filled here) gets grad[i] at position indices[i] along
// dim; grad and indices have out's shape with dim removed.
void scatter_along(const Tensor& grad, const Tensor& indices, int64_t dim, const Tensor& out);
}  // namespace remat::kernels::cpu
