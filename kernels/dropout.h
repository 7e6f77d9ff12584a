// The dropout mask rule, shared by the CPU and CUDA kernels so that one seed
// and offset give the same mask on every device: element i (row-major over the
// tensor's shape) is kept iff dropout_keeps(seed, offset, i, p), a pure
// function of the Philox stream of kernels/philox.h.
#pragma once

#include <cstdint>

#include "kernels/philox.h"

namespace remat::kernels {

// Kept iff the uniform draw in (0, 1] exceeds p, compared in float32: p = 0
// keeps everything, p = 1 nothing. Taking the raw bits lets a kernel use all
// four numbers of a Philox block.
REMAT_HOST_DEVICE inline bool dropout_keeps_bits(uint32_t bits, float p) {
  return uniform_from_bits(bits) > p;
}

REMAT_HOST_DEVICE inline bool dropout_keeps(uint64_t seed, uint64_t offset, uint64_t index,
                                            float p) {
  return dropout_keeps_bits(philox_u32(seed, offset, index), p);
}

}  // namespace remat::kernels
