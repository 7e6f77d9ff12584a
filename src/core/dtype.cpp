#include "remat/core/dtype.h"

#include "remat/core/error.h"

namespace remat {

size_t element_size(DType t) {
  return visit_dtype(t, []<typename T>() { return sizeof(T); });
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::BFloat16: return "bfloat16";
    case DType::Float16: return "float16";
    case DType::Int64: return "int64";
    case DType::Int32: return "int32";
    case DType::Bool: return "bool";
    case DType::Count: break;
  }
  return "(no dtype)";
}

void throw_invalid_dtype(DType t) {
  throw Error(fmt::format("{} is not a dtype", static_cast<int>(t)));
}

// IEEE binary16 <-> binary32, round to nearest even, with subnormals, inf, NaN.
Float16::Float16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) {
    bits = static_cast<uint16_t>(sign | 0x7e00u);
  } else if (abs >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
    bits = static_cast<uint16_t>(sign | 0x7c00u);
  } else if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    float magnitude;
    std::memcpy(&magnitude, &abs, 4);
    // Adding 0.5 (2^-1) aligns the half subnormal LSB (2^-24) with float's mantissa LSB.
    float shifted = magnitude + 0.5f;
    uint32_t s;
    std::memcpy(&s, &shifted, 4);
    bits = static_cast<uint16_t>(sign | (s - 0x3f000000u));
  } else {
    uint32_t mantissa_odd = (abs >> 13) & 1u;
    abs += 0xc8000fffu + mantissa_odd;  // rebias exponent (-112 << 23) and round
    bits = static_cast<uint16_t>(sign | (abs >> 13));
  }
}

Float16::operator float() const {
  uint32_t sign = (static_cast<uint32_t>(bits) & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent == 0) {
    float f = static_cast<float>(mantissa) * (1.0f / 16777216.0f);  // mantissa * 2^-24
    std::memcpy(&out, &f, 4);
    out |= sign;
  } else {
    out = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}

}  // namespace remat
