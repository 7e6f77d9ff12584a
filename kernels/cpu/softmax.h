// Softmax and log-softmax along one dim on the CPU (max-subtracted, so large
// logits do not overflow).
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// causal (dim must be the last): in each trailing [Lq, Lk] matrix, query i
// attends to keys j <= i + (Lk - Lq); the others get probability 0 (log: -inf)
// without being computed, and a query with no visible key gets NaN.
void softmax(const Tensor& x, int64_t dim, bool log, bool causal, const Tensor& out);

}  // namespace remat::kernels::cpu
