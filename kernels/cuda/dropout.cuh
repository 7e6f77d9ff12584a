// Dropout on the GPU, drawing the mask of kernels/dropout.h: for the same seed
// and offset the kept elements are exactly those the CPU kernel keeps.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// out (contiguous) = x * scale where element i is kept, 0 elsewhere; any
// floating dtype, 16-bit ones scaled in float32.
void dropout(const Tensor& x, double p, double scale, uint64_t seed, uint64_t offset,
             const Tensor& out);

}  // namespace remat::kernels::cuda
