// The window of a 2-d pooling, shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

namespace remat::kernels {

struct Pool2dParams {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
};

}  // namespace remat::kernels
