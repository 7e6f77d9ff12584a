// Dropout on the CPU. The mask is never stored: element i is kept iff
// dropout_keeps(seed, offset, i, p) of kernels/dropout.h, so backward and tape
// replay regenerate exactly the mask the forward used.
#pragma once

#include <cstdint>

#include "kernels/dropout.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// out (contiguous) = x * scale where element i is kept, 0 elsewhere. The
// forward passes the input, the backward the incoming gradient.
void dropout(const Tensor& x, double p, double scale, uint64_t seed, uint64_t offset,
             const Tensor& out);

}  // namespace remat::kernels::cpu
