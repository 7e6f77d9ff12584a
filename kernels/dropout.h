// Dropout: the kernels every backend implements (kernels/cpu/dropout.cpp,
// kernels/cuda/dropout.cu), declared once, and the mask rule they share so
// that one seed and offset give the same mask on every device: element i
// (row-major over the tensor's shape) is kept iff dropout_keeps(seed, offset,
// i, p), a pure function of the Philox stream of kernels/philox.h. The mask is
// never stored: backward and tape replay regenerate the one the forward used.
#pragma once

#include <cstdint>

#include "kernels/philox.h"
#include "remat/core/tensor.h"

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

// Kept values are scaled by 1 / (1 - p) so the expectation is unchanged; with
// p = 1 nothing is kept and a scale of 0 avoids an infinity.
REMAT_HOST_DEVICE inline double dropout_keep_scale(double p) {
  return p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
}

struct DropoutKernels {
  // out = x * scale where element i is kept, 0 elsewhere; x and out
  // contiguous (i is the row-major position), float32 or float64 (CUDA also
  // bfloat16/float16, scaled in float32). The forward passes the input, the
  // backward the incoming gradient.
  void (*apply_mask)(const Tensor& x, double p, double scale, uint64_t seed, uint64_t offset,
                     const Tensor& out);
};

namespace cpu {
extern const DropoutKernels dropout_kernels;
}
namespace cuda {
extern const DropoutKernels dropout_kernels;
}

}  // namespace remat::kernels
