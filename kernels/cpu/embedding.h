// Embedding lookup and its gradient on the CPU. Indices are int64.
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// out [..., D] (contiguous) row k = weight[indices[k]]; weight [V, D]. Rows are
// copied as bytes, so every dtype works. Throws naming the op, the index and V
// when an index is outside [0, V).
void embedding(const Tensor& weight, const Tensor& indices, const Tensor& out);
// out [V, D] (contiguous) = sum of grad rows [..., D] scattered to their
// indices. Deterministic: each element sums its rows in index order.
void embedding_backward(const Tensor& grad, const Tensor& indices, const Tensor& out);

}  // namespace remat::kernels::cpu
