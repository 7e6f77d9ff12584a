// Embedding lookup and its gradient on the GPU, and the index check that the
// embedding and cross-entropy kernels share. Indices are int64.
#pragma once

#include <cstdint>
#include <optional>

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// out [..., D] (contiguous) row k = weight[indices[k]]; weight [V, D]. Rows are
// copied as bits, so every dtype works. Throws naming the op, the index and V
// when an index is outside [0, V).
void embedding(const Tensor& weight, const Tensor& indices, const Tensor& out);
// out [V, D] (contiguous) = sum of grad rows [..., D] scattered to their
// indices, any floating dtype (16-bit ones summed in float32). Deterministic,
// and the same sums in the same order as the CPU kernel: each element sums
// its rows in index order.
void embedding_backward(const Tensor& grad, const Tensor& indices, const Tensor& out);

// What scan_indices found: `counted` indices other than the skipped value,
// and the position and value of the first one outside [0, limit), if any.
struct IndexScan {
  int64_t counted = 0;
  std::optional<int64_t> bad_position;
  int64_t bad_value = 0;
};

// Scans contiguous int64 indices on a CUDA device against [0, limit), not
// counting (nor checking) entries equal to `skip`. The caller throws with its
// own message. Synchronises with the device: an exception is the only way to
// report a bad index that leaves the device usable (a device-side assert does
// not), and it costs one small copy per call.
IndexScan scan_indices(const Tensor& indices, int64_t limit, std::optional<int64_t> skip);

}  // namespace remat::kernels::cuda
