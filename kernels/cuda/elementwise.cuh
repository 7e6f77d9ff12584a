// The elementwise kernel that CUDA kernels of other families call as one step
// of their work (gemm and normalization pack strided operands): the table's
// entry (kernels/elementwise.h) by name.
#pragma once

#include "kernels/elementwise.h"

namespace remat::kernels::cuda {

inline void copy(const Tensor& src, const Tensor& dst) { elementwise_kernels.copy(src, dst); }

}  // namespace remat::kernels::cuda
