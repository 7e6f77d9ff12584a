// The one dtype visitor behind both backends' (kernels/cpu/dtype_dispatch.h,
// kernels/cuda/common.cuh): a backend lists the dtypes a kernel computes on,
// each with the C++ type it computes them as.
#pragma once

#include "remat/core/dtype.h"
#include "remat/core/error.h"

namespace remat::kernels {

// dtype D, computed as T.
template <DType D, typename T>
struct DTypeCase {
  static constexpr DType dtype = D;
  using type = T;
};

// Calls fn.template operator()<T>() for the case whose dtype is t; a dtype
// no case lists throws, naming the kernel (`what`) and the backend.
template <typename... Cases, typename Fn>
void visit_cases(DType t, const char* backend, const char* what, Fn&& fn) {
  const bool found =
      ((t == Cases::dtype && (fn.template operator()<typename Cases::type>(), true)) || ...);
  if (!found) throw Error(fmt::format("{}: no {} kernel for dtype {}", what, backend, t));
}

}  // namespace remat::kernels
