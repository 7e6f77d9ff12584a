// The index check that the CUDA embedding and cross-entropy kernels share.
#pragma once

#include <cstdint>
#include <optional>

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

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
