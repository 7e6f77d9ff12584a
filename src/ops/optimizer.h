// What the optimizers' helpers (src/optim) take from the op layer besides
// registered ops, so they reach no kernel directly.
#pragma once

#include "remat/core/tensor.h"

namespace remat::ops {

// ||x||_p of one tensor on its device, accumulated in float64 (p = infinity:
// max |x|; kernels/optimizer.h has the contract). A device without a kernel
// throws NotImplementedError naming `op`, the caller.
double vector_norm(const char* op, const Tensor& x, double p);

}  // namespace remat::ops
