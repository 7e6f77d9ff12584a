// Random fills on the GPU: draws from the Philox stream (the same numbers the
// CPU kernels draw for the same seed, offset and index).
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// normal: standard normal; otherwise uniform in (0, 1]. out must be contiguous.
void fill_random(const Tensor& out, bool normal, uint64_t seed, uint64_t offset);

}  // namespace remat::kernels::cuda
