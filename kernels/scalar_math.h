// The scalar formulas of the elementwise ops (kernels/elementwise.h), written
// once for both backends: the CPU loops compute them in float or double, the
// CUDA kernels in their accumulation type, and both in an integer type for
// the ops integer_op admits. GELU's normal CDF and density come from Normal:
// libm's by default; the CPU's float loops pass polynomial ones that vectorise.
#pragma once

#include <cmath>
#include <type_traits>

#include "kernels/elementwise.h"
#include "remat/core/dtype.h"
#include "remat/core/host_device.h"

namespace remat::kernels {

inline constexpr double kSqrt2 = 1.4142135623730951;
inline constexpr double kSqrt2OverPi = 0.7978845608028654;
inline constexpr double kInvSqrt2Pi = 0.3989422804014327;

// Phi(x) and phi(x), the standard normal CDF and density, from libm.
struct StdNormal {
  template <typename T>
  REMAT_SCALAR static T cdf(T x) {
    return T(0.5) * (T(1) + std::erf(x / T(kSqrt2)));
  }
  template <typename T>
  REMAT_SCALAR static T pdf(T x) {
    return T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
  }
};

// The ops integer tensors (indices) take.
REMAT_HOST_DEVICE constexpr bool integer_op(UnaryOp op) {
  return op == UnaryOp::Neg || op == UnaryOp::Abs;
}
REMAT_HOST_DEVICE constexpr bool integer_op(BinaryOp op) {
  return op == BinaryOp::Add || op == BinaryOp::Sub || op == BinaryOp::Mul ||
         op == BinaryOp::Maximum;
}

template <UnaryOp kOp, typename Normal = StdNormal, typename T>
REMAT_SCALAR T apply_unary(T x) {
  if constexpr (kOp == UnaryOp::Neg) {
    return -x;
  } else if constexpr (kOp == UnaryOp::Abs) {
    if constexpr (std::is_integral_v<T>) {
      return x < T(0) ? -x : x;
    } else {
      return std::abs(x);
    }
  } else if constexpr (kOp == UnaryOp::Exp) {
    return std::exp(x);
  } else if constexpr (kOp == UnaryOp::Log) {
    return std::log(x);
  } else if constexpr (kOp == UnaryOp::Sqrt) {
    return std::sqrt(x);
  } else if constexpr (kOp == UnaryOp::Tanh) {
    return std::tanh(x);
  } else if constexpr (kOp == UnaryOp::Sigmoid) {
    return T(1) / (T(1) + std::exp(-x));
  } else if constexpr (kOp == UnaryOp::Relu) {
    return x < T(0) ? T(0) : x;  // NaN stays NaN, -0 stays -0 (PyTorch)
  } else if constexpr (kOp == UnaryOp::Gelu) {
    return x * Normal::cdf(x);
  } else {
    static_assert(kOp == UnaryOp::GeluTanh);
    return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x)));
  }
}

template <BinaryOp kOp, typename Normal = StdNormal, typename T>
REMAT_SCALAR T apply_binary(T a, T b) {
  if constexpr (kOp == BinaryOp::Add) {
    return a + b;
  } else if constexpr (kOp == BinaryOp::Sub) {
    return a - b;
  } else if constexpr (kOp == BinaryOp::Mul) {
    return a * b;
  } else if constexpr (kOp == BinaryOp::Div) {
    return a / b;
  } else if constexpr (kOp == BinaryOp::Pow) {
    return std::pow(a, b);
  } else if constexpr (kOp == BinaryOp::Maximum) {
    if constexpr (std::is_integral_v<T>) {
      return a > b ? a : b;
    } else {
      return a > b || a != a ? a : b;  // a NaN either side wins
    }
  } else if constexpr (kOp == BinaryOp::ReluBackward) {
    return b <= T(0) ? T(0) : a;  // a NaN output passes g
  } else if constexpr (kOp == BinaryOp::GeluBackward) {
    return a * (Normal::cdf(b) + b * Normal::pdf(b));
  } else if constexpr (kOp == BinaryOp::GeluTanhBackward) {
    const T t = std::tanh(T(kSqrt2OverPi) * (b + T(0.044715) * b * b * b));
    const T d_inner = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * b * b);
    return a * (T(0.5) * (T(1) + t) + T(0.5) * b * (T(1) - t * t) * d_inner);
  } else if constexpr (kOp == BinaryOp::TanhBackward) {
    return a * (T(1) - b * b);
  } else {
    static_assert(kOp == BinaryOp::SigmoidBackward);
    return a * b * (T(1) - b);
  }
}

// A value converted as copy converts it: bool as "nonzero in float32", and
// the narrow floats (the non-arithmetic types: bfloat16, float16,
// float8_e4m3) through float32 both ways. Out-of-range floats to integers
// (int8 included) are undefined, as C++'s casts are.
template <typename Dst, typename Src>
REMAT_SCALAR Dst convert(Src v) {
  if constexpr (std::is_same_v<Dst, Src>) {
    return v;
  } else if constexpr (std::is_same_v<Dst, bool>) {
    return static_cast<float>(v) != 0.0f;
  } else if constexpr (!std::is_arithmetic_v<Src>) {
    return static_cast<Dst>(static_cast<float>(v));
  } else if constexpr (!std::is_arithmetic_v<Dst>) {
    return Dst(static_cast<float>(v));
  } else {
    return static_cast<Dst>(v);
  }
}

// `value` as fill writes it into host storage type T: the narrow floats
// rounded through float32, the others cast.
template <typename T>
T fill_value(double value) {
  if constexpr (!std::is_arithmetic_v<T>) {
    return T(static_cast<float>(value));
  } else {
    return static_cast<T>(value);
  }
}

}  // namespace remat::kernels
