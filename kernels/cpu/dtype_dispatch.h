// The CPU kernels' dtype visitors (kernels/cuda/common.cuh has the CUDA
// twins): each calls fn.template operator()<T>() with T the C++ type of the
// dtypes a kernel computes on, and throws, naming `what`, for the others.
// bfloat16 and float16 are not among them: the op layer widens them to float32.
#pragma once

#include <cstdint>
#include <type_traits>

#include "remat/core/dtype.h"
#include "remat/core/error.h"

namespace remat::kernels::cpu {

template <typename Fn>
void visit_floating(DType t, const char* what, Fn&& fn) {
  switch (t) {
    case kFloat32: fn.template operator()<float>(); return;
    case kFloat64: fn.template operator()<double>(); return;
    default: throw Error(fmt::format("{}: no CPU kernel for dtype {}", what, t));
  }
}

// visit_floating, plus int64 and int32: the dtypes arithmetic and reductions take.
template <typename Fn>
void visit_arith(DType t, const char* what, Fn&& fn) {
  switch (t) {
    case kInt64: fn.template operator()<int64_t>(); return;
    case kInt32: fn.template operator()<int32_t>(); return;
    default: visit_floating(t, what, fn);
  }
}

// The type a CPU sum of T accumulates in: double for the floating types
// (float32 too), int64 for the integers.
template <typename T>
using sum_acc_t = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

}  // namespace remat::kernels::cpu

namespace remat::kernels::cpu {

// visit_floating, plus bfloat16 and float16 (as BFloat16 and Float16): for
// kernels of ops that opt out of widening and compute on 16-bit storage.
template <typename Fn>
void visit_all_floating(DType t, const char* what, Fn&& fn) {
  switch (t) {
    case kBFloat16: fn.template operator()<BFloat16>(); return;
    case kFloat16: fn.template operator()<Float16>(); return;
    default: visit_floating(t, what, fn);
  }
}

}  // namespace remat::kernels::cpu
