#include "kernels/cpu/attention.h"

#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {

void causal_mask(const Tensor& x, double fill, const Tensor& out) {
  Tensor src = x.contiguous();
  const int64_t lq = src.shape()[static_cast<size_t>(src.dim() - 2)];
  const int64_t lk = src.shape().back();
  const int64_t rows = lk == 0 ? 0 : src.numel() / lk;  // every (batch, query) pair
  auto run = [&]<typename T>() {
    const T* in = static_cast<const T*>(src.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    const auto value = static_cast<T>(fill);
#pragma omp parallel for if (rows * lk >= 2 * kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      // Keys 0..last are visible to query i; last may be < 0 (nothing visible).
      const int64_t last = r % lq + (lk - lq);
      const T* p = in + r * lk;
      T* q = o + r * lk;
      for (int64_t j = 0; j < lk; ++j) q[j] = j <= last ? p[j] : value;
    }
  };
  switch (out.dtype()) {
    case kFloat32: run.operator()<float>(); break;
    case kFloat64: run.operator()<double>(); break;
    default: throw Error(fmt::format("causal_mask: no CPU kernel for dtype {}", out.dtype()));
  }
}

}  // namespace remat::kernels::cpu
