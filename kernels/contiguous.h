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

// The elements of an optional operand, null where it is left out (a kernel
// that skips a scale, a shift or a gradient not asked for).
template <typename T>
const T* in_ptr(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}
template <typename T>
T* out_ptr(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

}  // namespace remat::kernels
