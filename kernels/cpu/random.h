// Random fills and the dropout mask on the CPU, from the Philox stream of
// kernels/philox.h (the CUDA kernels draw the same numbers).
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

enum class Distribution { Uniform, Normal };
// out (contiguous) element i = the i-th draw of the stream at (seed, offset).
void fill_random(const Tensor& out, Distribution dist, uint64_t seed, uint64_t offset);

}  // namespace remat::kernels::cpu
