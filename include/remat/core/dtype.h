// Element types. bfloat16 and float16 are storage types: math on them
// accumulates in float32.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include <fmt/format.h>

namespace remat {

// Count is not a dtype: the number of them, so switches over DType name
// every case (-Wswitch) and a value out of range is caught, not computed on.
enum class DType : int8_t { Float32, Float64, BFloat16, Float16, Int64, Int32, Bool, Count };

inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kFloat64 = DType::Float64;
inline constexpr DType kBFloat16 = DType::BFloat16;
inline constexpr DType kFloat16 = DType::Float16;
inline constexpr DType kInt64 = DType::Int64;
inline constexpr DType kInt32 = DType::Int32;
inline constexpr DType kBool = DType::Bool;

size_t element_size(DType t);
[[noreturn]] void throw_invalid_dtype(DType t);
const char* dtype_name(DType t);
inline bool is_floating(DType t) {
  return t == kFloat32 || t == kFloat64 || t == kBFloat16 || t == kFloat16;
}
// bfloat16 and float16: stored narrow, computed in float32.
inline bool is_reduced_float(DType t) { return t == kBFloat16 || t == kFloat16; }

// 16-bit float storage types. Conversions round to nearest even.
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  BFloat16(float f) {  // NOLINT(google-explicit-constructor): numeric type
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
    } else {
      bits = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
  }
  operator float() const {  // NOLINT(google-explicit-constructor)
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

struct Float16 {
  uint16_t bits = 0;
  Float16() = default;
  Float16(float f);        // NOLINT(google-explicit-constructor)
  operator float() const;  // NOLINT(google-explicit-constructor)
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
