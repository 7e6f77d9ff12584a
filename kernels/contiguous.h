// The check behind every kernel contract that names contiguous operands: the
// op layer makes them contiguous (kernels never call back into ops), and a
// kernel reads them as flat arrays, so a strided one would be misread.
#pragma once

#include <cstddef>
#include <functional>
#include <initializer_list>

#include "remat/core/error.h"
#include "remat/core/tensor.h"

namespace remat::kernels {

// Throws naming the kernel and the operand unless every operand is
// contiguous or undefined (an optional operand left out).
inline void check_contiguous(const char* kernel,
                             std::initializer_list<std::reference_wrapper<const Tensor>> operands) {
  size_t position = 0;
  for (const Tensor& t : operands) {
    REMAT_CHECK(!t.defined() || t.is_contiguous(), "{}: operand {} ({}) must be contiguous", kernel,
                position, TensorMeta::of(t).str());
    ++position;
  }
}

}  // namespace remat::kernels
