// Softmax and log-softmax along one dim: the kernels every backend implements
// (kernels/cpu/softmax.cpp, kernels/cuda/softmax.cu), declared once. Rows are
// max-subtracted, so large logits do not overflow. Operands may be strided;
// CUDA computes bfloat16/float16 in float32 (on the CPU the op layer widens them).
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels {

struct SoftmaxKernels {
  // out = softmax(x) (log: log_softmax(x)) along dim. causal (dim must be the
  // last): in each trailing [Lq, Lk] matrix, query i attends to keys
  // j <= i + (Lk - Lq); the others get probability 0 (log: -inf) without
  // being exponentiated, and a query with no visible key gets NaN.
  void (*forward)(const Tensor& x, int64_t dim, bool log, bool causal, const Tensor& out);
  // grad_x from the output y and its gradient g, in one pass over each row:
  // y * (g - sum(g * y)) for softmax, g - exp(y) * sum(g) for log_softmax.
  // A causal softmax needs no mask here: its hidden outputs are 0.
  void (*backward)(const Tensor& g, const Tensor& y, int64_t dim, bool log, const Tensor& grad_x);
};

namespace cpu {
extern const SoftmaxKernels softmax_kernels;
}
namespace cuda {
extern const SoftmaxKernels softmax_kernels;
}

}  // namespace remat::kernels
