#include "kernels/cpu/softmax.h"

#include <cmath>

#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

// One row of softmax or log_softmax over its first `visible` entries; the
// rest (causal: keys after the query) get probability 0. kUnitStride > 0
// fixes the strides at 1 at compile time so the compiler vectorises the loops.
template <typename T, int kUnitStride>
void softmax_row(const T* p, T* q, int64_t len, int64_t visible, int64_t xs, int64_t os, bool log) {
  if constexpr (kUnitStride > 0) xs = os = 1;
  if (visible <= 0) {  // no visible key: NaN, as a row of -inf logits gives in PyTorch
    for (int64_t k = 0; k < len; ++k) q[k * os] = std::numeric_limits<T>::quiet_NaN();
    return;
  }
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < visible; ++k) m = std::max(m, p[k * xs]);
  if (std::isinf(m) && m < 0) m = 0;  // a row of -inf logits: keep exp finite
  T total = 0;
  for (int64_t k = 0; k < visible; ++k) {
    T e = std::exp(p[k * xs] - m);
    total += e;
    if (!log) q[k * os] = e;
  }
  if (log) {
    T lse = m + std::log(total);
    for (int64_t k = 0; k < visible; ++k) q[k * os] = p[k * xs] - lse;
  } else {
    T inv = T(1) / total;
    for (int64_t k = 0; k < visible; ++k) q[k * os] *= inv;
  }
  const T hidden = log ? -std::numeric_limits<T>::infinity() : T(0);
  for (int64_t k = visible; k < len; ++k) q[k * os] = hidden;
}

}  // namespace

void softmax(const Tensor& x, int64_t dim, bool log, bool causal, const Tensor& out) {
  const int64_t len = x.shape()[static_cast<size_t>(dim)];
  if (len == 0) return;  // empty rows: nothing to normalise, and no memory to point into
  // Causal rows are the queries of trailing [Lq, Lk] matrices (dim is the last).
  const int64_t queries = causal ? x.shape()[static_cast<size_t>(x.dim() - 2)] : 1;
  const int64_t xs = x.strides()[static_cast<size_t>(dim)];
  const int64_t os = out.strides()[static_cast<size_t>(dim)];
  // Rows: every index of the other dims.
  Shape rows_shape = x.shape();
  rows_shape[static_cast<size_t>(dim)] = 1;
  const int64_t rows = numel_of(rows_shape);
  auto run = [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
#pragma omp parallel for if (rows * len >= 2 * kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t xo = 0, oo = 0, rem = r;
      for (size_t d = rows_shape.size(); d-- > 0;) {
        int64_t idx = rem % rows_shape[d];
        rem /= rows_shape[d];
        xo += idx * x.strides()[d];
        oo += idx * out.strides()[d];
      }
      // Query i sees keys j <= i + (Lk - Lq): bottom-right aligned, as in PyTorch.
      const int64_t visible = causal ? std::min(len, r % queries + (len - queries) + 1) : len;
      if (xs == 1 && os == 1) {
        softmax_row<T, 1>(in + xo, o + oo, len, visible, 1, 1, log);
      } else {
        softmax_row<T, 0>(in + xo, o + oo, len, visible, xs, os, log);
      }
    }
  };
  switch (x.dtype()) {
    case kFloat32: run.operator()<float>(); break;
    case kFloat64: run.operator()<double>(); break;
    default: throw Error(fmt::format("softmax: no CPU kernel for dtype {}", x.dtype()));
  }
}

}  // namespace remat::kernels::cpu
