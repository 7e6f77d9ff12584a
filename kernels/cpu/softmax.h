// Softmax and log-softmax along one dim on the CPU (max-subtracted, so large
// logits do not overflow).
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

void softmax(const Tensor& x, int64_t dim, bool log, const Tensor& out);

}  // namespace remat::kernels::cpu
