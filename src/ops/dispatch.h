// Helpers every op definition uses: device dispatch and operand checks.
#pragma once

#include <functional>

#include "ops/registry.h"

namespace remat::ops {

// Runs the kernel for device d. A device without a kernel for this op throws
// NotImplementedError naming the op; the CUDA backend fills these in.
inline void on_device(const char* op, Device d, const std::function<void()>& cpu,
                      const std::function<void()>& cuda = {}) {
  if (d.is_cpu()) {
    cpu();
  } else if (cuda) {
    cuda();
  } else {
    throw NotImplementedError(fmt::format("op '{}' on {}", op, d));
  }
}

// The CUDA kernel argument of on_device: a call in CUDA builds, absent otherwise.
#if defined(REMAT_WITH_CUDA)
#define REMAT_CUDA_KERNEL(...) [&] { __VA_ARGS__; }
#else
#define REMAT_CUDA_KERNEL(...) std::function<void()>()
#endif

// A 0-d tensor as the one-element 1-d view that its dim 0 (or -1) stands for,
// for ops along a dim that accept scalars as PyTorch does (softmax, max).
inline Tensor scalar_as_1d(const Tensor& t) {
  return t.dim() == 0 ? t.as_strided({1}, {1}, t.offset()) : t;
}

// Operands a and b must have the same dtype (no implicit promotion).
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_floating(const char* op, const Tensor& x);
void check_dtype(const char* op, const Tensor& x, DType want, const char* role);
// Wraps and sorts dims (all dims when empty); throws on repeats.
std::vector<int64_t> normalize_dims(const char* op, const std::vector<int64_t>& dims, int64_t ndim);
Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim);

}  // namespace remat::ops
