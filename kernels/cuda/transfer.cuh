// Copies between host and device memory.
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// dst = src where one is on the CPU and the other on a CUDA device (or both on
// devices); same shape and dtype, both contiguous.
void copy_between_devices(const Tensor& src, const Tensor& dst);

}  // namespace remat::kernels::cuda
