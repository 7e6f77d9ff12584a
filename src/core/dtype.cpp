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
    case DType::Int8: return "int8";
    case DType::Float8E4M3: return "float8_e4m3";
    case DType::Count: break;
  }
  return "(no dtype)";
}

void throw_invalid_dtype(DType t) {
  throw Error(fmt::format("{} is not a dtype", static_cast<int>(t)));
}

}  // namespace remat
