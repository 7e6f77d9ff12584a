// Softmax and log-softmax along one dim on the GPU, with the signature and
// semantics of kernels/cpu/softmax.h (max-subtracted; bfloat16/float16
// computed in float32).
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// causal (dim must be the last): in each trailing [Lq, Lk] matrix, query i
// attends to keys j <= i + (Lk - Lq); the others get probability 0 (log: -inf)
// without being exponentiated, and a query with no visible key gets NaN.
void softmax(const Tensor& x, int64_t dim, bool log, bool causal, const Tensor& out);

}  // namespace remat::kernels::cuda
