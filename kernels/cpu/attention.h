// The causal mask of attention scores on the CPU.
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// out (contiguous) = x, except that in each trailing [Lq, Lk] matrix the
// positions j > i + (Lk - Lq) (keys after the query, bottom-right aligned)
// are set to fill.
void causal_mask(const Tensor& x, double fill, const Tensor& out);

}  // namespace remat::kernels::cpu
