// Helpers every op definition uses: the kernel table of a device, and operand checks.
#pragma once

#include <array>
#include <span>
#include <type_traits>

#include "ops/registry.h"

namespace remat::ops {

// The kernel table (kernels/<family>.h) of an op family for device d: the
// CPU's, or the CUDA backend's where REMAT_CUDA_KERNELS names one (CUDA
// builds; null otherwise). Other devices throw NotImplementedError naming the op.
template <typename Table>
const Table& kernels_for(const char* op, Device d, const Table& cpu,
                         std::type_identity_t<const Table*> cuda) {
  if (d.is_cpu()) return cpu;
  if (d.is_cuda() && cuda != nullptr) return *cuda;
  throw NotImplementedError(fmt::format("op '{}' on {}", op, d));
}

#if defined(REMAT_WITH_CUDA)
#define REMAT_CUDA_KERNELS(table) (&::remat::kernels::cuda::table)
#else
#define REMAT_CUDA_KERNELS(table) nullptr
#endif

// t made contiguous for a kernel whose contract needs it (kernels/<family>.h);
// an undefined optional operand stays undefined.
inline Tensor contiguous_operand(const Tensor& t) { return t.defined() ? t.contiguous() : t; }

// A 0-d tensor as the one-element 1-d view that its dim 0 (or -1) stands for,
// for ops along a dim that accept scalars as PyTorch does (softmax, max).
inline Tensor scalar_as_1d(const Tensor& t) {
  return t.dim() == 0 ? t.as_strided({1}, {1}, t.offset()) : t;
}

// Operands a and b must have the same dtype (no implicit promotion).
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_floating(const char* op, const Tensor& x);
void check_dtype(const char* op, const Tensor& x, DType want, const char* role);
// The two values (one per spatial dim) of a 2-d op's parameter, from the
// list its public signature takes; throws unless there are exactly two.
std::array<int64_t, 2> pair_of(const char* op, const char* key, const std::vector<int64_t>& v);
// Wraps and sorts dims (all dims when empty); throws on repeats.
std::vector<int64_t> normalize_dims(const char* op, std::span<const int64_t> dims, int64_t ndim);
Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim);

}  // namespace remat::ops
