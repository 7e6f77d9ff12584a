// The CPU kernels' dtype visitors (kernels/cuda/common.cuh has the CUDA
// ones; both are lists of kernels/dtype_visit.h cases): each calls
// fn.template operator()<T>() with T the C++ type of the dtypes a kernel
// computes on, and throws, naming `what`, for the others. Kernels that take
// bfloat16 and float16 compute them in float32 element by element
// (compute_t), rounding once on store; for the others the op layer widens
// them to float32 tensors first (OpDef::compute_reduced_in_float).
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/dtype_visit.h"

namespace remat::kernels::cpu {

using F32 = DTypeCase<kFloat32, float>;
using F64 = DTypeCase<kFloat64, double>;
using I64 = DTypeCase<kInt64, int64_t>;
using I32 = DTypeCase<kInt32, int32_t>;

template <typename Fn>
void visit_floating(DType t, const char* what, Fn&& fn) {
  visit_cases<F32, F64>(t, "CPU", what, fn);
}

// visit_floating, plus int64 and int32: the dtypes arithmetic and reductions take.
template <typename Fn>
void visit_arith(DType t, const char* what, Fn&& fn) {
  visit_cases<F32, F64, I64, I32>(t, "CPU", what, fn);
}

// visit_floating, plus bfloat16 and float16 (as BFloat16 and Float16): for
// kernels of ops that opt out of widening and compute on 16-bit storage.
template <typename Fn>
void visit_all_floating(DType t, const char* what, Fn&& fn) {
  visit_cases<F32, F64, DTypeCase<kBFloat16, BFloat16>, DTypeCase<kFloat16, Float16>>(t, "CPU",
                                                                                      what, fn);
}

// visit_arith plus bfloat16 and float16.
template <typename Fn>
void visit_arith_and_reduced(DType t, const char* what, Fn&& fn) {
  visit_cases<F32, F64, I64, I32, DTypeCase<kBFloat16, BFloat16>, DTypeCase<kFloat16, Float16>>(
      t, "CPU", what, fn);
}

template <typename T>
inline constexpr bool is_reduced_v = std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>;

// The type arithmetic on T runs in: float for the 16-bit types (each
// element converted as loaded and the result rounded once, which is what
// widening the whole tensor to float32 gives, bit for bit), T otherwise.
template <typename T>
using compute_t = std::conditional_t<is_reduced_v<T>, float, T>;

// The type a CPU sum of T accumulates in: double for the floating types
// (float32 too), int64 for the integers.
template <typename T>
using sum_acc_t = std::conditional_t<std::is_floating_point_v<compute_t<T>>, double, int64_t>;

}  // namespace remat::kernels::cpu
