// Embedding lookup and its gradient: the kernels every backend implements
// (kernels/cpu/embedding.cpp, kernels/cuda/embedding.cu), declared once.
// Indices are int64. Every operand is contiguous: the op layer makes the
// inputs so, and the kernels check. Both throw naming the op, the index and V
// when an index is outside [0, V) (on CUDA this synchronises with the device).
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels {

struct EmbeddingKernels {
  // out [..., D] row k = weight[indices[k]]; weight [V, D]. Rows are copied
  // as bytes, so every dtype works.
  void (*forward)(const Tensor& weight, const Tensor& indices, const Tensor& out);
  // out [V, D] = sum of grad rows [..., D] scattered to their indices (CUDA:
  // 16-bit dtypes summed in float32). Deterministic, and the same sums in
  // the same order on every device: each element sums its rows in index order.
  void (*backward)(const Tensor& grad, const Tensor& indices, const Tensor& out);
};

namespace cpu {
extern const EmbeddingKernels embedding_kernels;
}
namespace cuda {
extern const EmbeddingKernels embedding_kernels;
}

}  // namespace remat::kernels
