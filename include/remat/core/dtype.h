// Element types. bfloat16 and float16 are storage types: math on them
// accumulates in float32. int8 and float8_e4m3 are storage only (compressed
// activations, kernels/quantize.h): copy, fill and conversion take them,
// arithmetic kernels reject them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "remat/core/host_device.h"

namespace remat {

// Count is not a dtype: the number of them, so switches over DType name
// every case (-Wswitch) and a value out of range is caught, not computed on.
enum class DType : int8_t {
  Float32,
  Float64,
  BFloat16,
  Float16,
  Int64,
  Int32,
  Bool,
  Int8,
  Float8E4M3,
  Count
};

inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kFloat64 = DType::Float64;
inline constexpr DType kBFloat16 = DType::BFloat16;
inline constexpr DType kFloat16 = DType::Float16;
inline constexpr DType kInt64 = DType::Int64;
inline constexpr DType kInt32 = DType::Int32;
inline constexpr DType kBool = DType::Bool;
inline constexpr DType kInt8 = DType::Int8;
inline constexpr DType kFloat8E4M3 = DType::Float8E4M3;

size_t element_size(DType t);
[[noreturn]] void throw_invalid_dtype(DType t);
const char* dtype_name(DType t);
// float8_e4m3 is not floating here: it is storage only, so op outputs of it
// never require grad and floating-only ops reject it.
inline bool is_floating(DType t) {
  return t == kFloat32 || t == kFloat64 || t == kBFloat16 || t == kFloat16;
}
// bfloat16 and float16: stored narrow, computed in float32.
inline bool is_reduced_float(DType t) { return t == kBFloat16 || t == kFloat16; }

// 16-bit float storage types, the same type on the host and in CUDA kernels,
// so a value rounds the same on both: conversions from float32 round to
// nearest even, keep subnormals, overflow to infinity (float16) and keep NaN
// a quiet NaN of the same sign; conversions to float32 are exact.
namespace detail {
REMAT_HOST_DEVICE inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
REMAT_HOST_DEVICE inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
}  // namespace detail

struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  static REMAT_HOST_DEVICE BFloat16 from_bits(uint16_t b) {
    BFloat16 v;
    v.bits = b;
    return v;
  }
  REMAT_HOST_DEVICE BFloat16(float f) {  // NOLINT(google-explicit-constructor): numeric type
    // Round to nearest even; a NaN stays a (quiet) NaN. A select, not a
    // branch, so loops of conversions vectorise.
    const uint32_t u = detail::float_bits(f);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x40u;
    bits = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
  REMAT_HOST_DEVICE operator float() const {  // NOLINT(google-explicit-constructor)
    return detail::bits_float(static_cast<uint32_t>(bits) << 16);
  }
};

// IEEE binary16.
struct Float16 {
  uint16_t bits = 0;
  Float16() = default;
  static REMAT_HOST_DEVICE Float16 from_bits(uint16_t b) {
    Float16 v;
    v.bits = b;
    return v;
  }
  REMAT_HOST_DEVICE Float16(float f) {  // NOLINT(google-explicit-constructor): numeric type
    const uint32_t x = detail::float_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) {
      bits = static_cast<uint16_t>(sign | 0x7e00u);
    } else if (abs >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
      bits = static_cast<uint16_t>(sign | 0x7c00u);
    } else if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
      // Adding 0.5 (2^-1) aligns the half subnormal LSB (2^-24) with float's
      // mantissa LSB, and the float addition rounds to nearest even.
      const uint32_t s = detail::float_bits(detail::bits_float(abs) + 0.5f);
      bits = static_cast<uint16_t>(sign | (s - 0x3f000000u));
    } else {
      const uint32_t mantissa_odd = (abs >> 13) & 1u;
      abs += 0xc8000fffu + mantissa_odd;  // rebias exponent (-112 << 23) and round
      bits = static_cast<uint16_t>(sign | (abs >> 13));
    }
  }
  REMAT_HOST_DEVICE operator float() const {  // NOLINT(google-explicit-constructor)
    const uint32_t sign = (static_cast<uint32_t>(bits) & 0x8000u) << 16;
    const uint32_t exponent = (bits >> 10) & 0x1fu;
    const uint32_t mantissa = bits & 0x3ffu;
    if (exponent == 0x1f) return detail::bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) {
      const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);  // * 2^-24
      return detail::bits_float(detail::float_bits(magnitude) | sign);
    }
    return detail::bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
  }
};

// OCP FP8 E4M3 ("fn", ml_dtypes.float8_e4m3fn): sign, 4 exponent bits (bias
// 7), 3 mantissa bits, subnormals, no infinities, NaN = S.1111.111, largest
// finite 448. From float32 it rounds to nearest even, as ml_dtypes does:
// anything that rounds above 448 (|x| > 464, infinities included) becomes a
// NaN of x's sign, since e4m3fn has no infinity; NaN stays NaN. To float32
// is exact.
struct Float8E4M3 {
  uint8_t bits = 0;
  Float8E4M3() = default;
  static REMAT_HOST_DEVICE Float8E4M3 from_bits(uint8_t b) {
    Float8E4M3 v;
    v.bits = b;
    return v;
  }
  REMAT_HOST_DEVICE Float8E4M3(float f) {  // NOLINT(google-explicit-constructor): numeric type
    const uint32_t x = detail::float_bits(f);
    const uint32_t sign = (x >> 24) & 0x80u;
    uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x43e80000u) {  // above 464 (or NaN): no finite code is nearest
      bits = static_cast<uint8_t>(sign | 0x7fu);
    } else if (abs < 0x3c800000u) {  // below 2^-6, the smallest normal: subnormal or zero
      // Adding 2^14 aligns the subnormal LSB (2^-9) with float's mantissa
      // LSB, and the float addition rounds to nearest even.
      const uint32_t s = detail::float_bits(detail::bits_float(abs) + 16384.0f);
      bits = static_cast<uint8_t>(sign | (s - 0x46800000u));
    } else {
      const uint32_t mantissa_odd = (abs >> 20) & 1u;
      abs += 0xc407ffffu + mantissa_odd;  // rebias exponent (-120 << 23) and round
      bits = static_cast<uint8_t>(sign | (abs >> 20));
    }
  }
  REMAT_HOST_DEVICE operator float() const {  // NOLINT(google-explicit-constructor)
    const uint32_t sign = (static_cast<uint32_t>(bits) & 0x80u) << 24;
    const uint32_t exponent = (bits >> 3) & 0xfu;
    const uint32_t mantissa = bits & 0x7u;
    if ((bits & 0x7fu) == 0x7fu) return detail::bits_float(sign | 0x7fc00000u);
    if (exponent == 0) {
      const float magnitude = static_cast<float>(mantissa) * (1.0f / 512.0f);  // * 2^-9
      return detail::bits_float(detail::float_bits(magnitude) | sign);
    }
    return detail::bits_float(sign | ((exponent + 120) << 23) | (mantissa << 20));
  }
};

template <typename T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = kFloat32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = kFloat64;
};
template <>
struct dtype_of<BFloat16> {
  static constexpr DType value = kBFloat16;
};
template <>
struct dtype_of<Float16> {
  static constexpr DType value = kFloat16;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = kInt64;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = kInt32;
};
template <>
struct dtype_of<bool> {
  static constexpr DType value = kBool;
};
template <>
struct dtype_of<int8_t> {
  static constexpr DType value = kInt8;
};
template <>
struct dtype_of<Float8E4M3> {
  static constexpr DType value = kFloat8E4M3;
};
template <typename T>
inline constexpr DType dtype_of_v = dtype_of<T>::value;

// Calls fn.template operator()<T>() with T the C++ type of dtype; a value
// that is no dtype throws.
template <typename Fn>
decltype(auto) visit_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::Float32: return fn.template operator()<float>();
    case DType::Float64: return fn.template operator()<double>();
    case DType::BFloat16: return fn.template operator()<BFloat16>();
    case DType::Float16: return fn.template operator()<Float16>();
    case DType::Int64: return fn.template operator()<int64_t>();
    case DType::Int32: return fn.template operator()<int32_t>();
    case DType::Bool: return fn.template operator()<bool>();
    case DType::Int8: return fn.template operator()<int8_t>();
    case DType::Float8E4M3: return fn.template operator()<Float8E4M3>();
    case DType::Count: break;
  }
  throw_invalid_dtype(t);
}

}  // namespace remat

template <>
struct fmt::formatter<remat::DType> : fmt::formatter<std::string_view> {
  auto format(remat::DType t, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(remat::dtype_name(t), ctx);
  }
};
