// Initialisers the layers share, drawing from remat's default generator.
#pragma once

#include <cmath>

#include "remat/core/tensor.h"
#include "remat/ops.h"

namespace remat::nn::init {

// Uniform on (-bound, bound] (rand draws from (0, 1]), float32 on the CPU.
inline Tensor uniform(const Shape& shape, double bound) {
  return rand(shape) * (2.0 * bound) - bound;
}

// PyTorch's default for Linear and Conv2d weights and biases:
// kaiming_uniform(a = sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
inline Tensor fan_in_uniform(const Shape& shape, int64_t fan_in) {
  return uniform(shape, 1.0 / std::sqrt(static_cast<double>(fan_in)));
}

}  // namespace remat::nn::init
