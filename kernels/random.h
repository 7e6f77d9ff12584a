// Random fills: the kernels every backend implements (kernels/cpu/random.cpp,
// kernels/cuda/random.cu), declared once. They draw from the Philox stream of
// kernels/philox.h, so every device gives the same numbers for the same seed,
// offset and index.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels {

// Uniform in (0, 1], or standard normal (Box-Muller over draws 2i and 2i + 1).
enum class Distribution { Uniform, Normal };

struct RandomKernels {
  // out (contiguous, any floating dtype) element i = the i-th number of dist
  // drawn from the stream at (seed, offset).
  void (*fill)(const Tensor& out, Distribution dist, uint64_t seed, uint64_t offset);
};

namespace cpu {
extern const RandomKernels random_kernels;
}
namespace cuda {
extern const RandomKernels random_kernels;
}

}  // namespace remat::kernels
