// The parameters of a 2-d convolution, shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

namespace remat::kernels {

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
};

}  // namespace remat::kernels
