// Softmax and log-softmax on the CPU (contract: kernels/softmax.h): one row
// per dim-slice, rows in parallel with OpenMP; float32 and float64, and the
// 16-bit types through float rows.
#include "kernels/softmax.h"

#include <array>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/float_rows.h"
#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

// One row of softmax or log_softmax over its first `visible` entries; the
// rest (causal: keys after the query) get probability 0. kUnitStride fixes
// the strides at 1 at compile time so the compiler vectorises the loops.
template <typename T, bool kUnitStride>
void softmax_row(const T* p, T* q, int64_t len, int64_t visible, int64_t xs, int64_t os, bool log) {
  if constexpr (kUnitStride) xs = os = 1;
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

// One row of the backward: the row's reduction, then the gradient, while
// the row is still in cache.
template <typename T, bool kUnitStride>
void softmax_backward_row(const T* g, const T* y, T* dx, int64_t len, std::array<int64_t, 3> s,
                          bool log) {
  if constexpr (kUnitStride) s = {1, 1, 1};
  T total = 0;
  if (log) {
#pragma omp simd reduction(+ : total)
    for (int64_t k = 0; k < len; ++k) total += g[k * s[0]];
    for (int64_t k = 0; k < len; ++k) dx[k * s[2]] = g[k * s[0]] - std::exp(y[k * s[1]]) * total;
  } else {
#pragma omp simd reduction(+ : total)
    for (int64_t k = 0; k < len; ++k) total += g[k * s[0]] * y[k * s[1]];
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) dx[k * s[2]] = y[k * s[1]] * (g[k * s[0]] - total);
  }
}

// Calls row(r, offsets) for every row along dim (every index of the other
// dims), rows in parallel; offsets are each operand's element offset of the
// row's first entry.
template <size_t N, typename RowFn>
void for_each_slice(const Shape& shape, int64_t dim, const std::array<const Tensor*, N>& operands,
                    RowFn&& row) {
  Shape rows_shape = shape;
  rows_shape[static_cast<size_t>(dim)] = 1;
  const int64_t rows = numel_of(rows_shape);
  const int64_t len = shape[static_cast<size_t>(dim)];
  parallel_for(rows, rows * len >= 2 * kParallelGrain, [&](int64_t r) {
    std::array<int64_t, N> offsets{};
    int64_t rem = r;
    for (size_t d = rows_shape.size(); d-- > 0;) {
      const int64_t idx = rem % rows_shape[d];
      rem /= rows_shape[d];
      for (size_t k = 0; k < N; ++k) offsets[k] += idx * operands[k]->strides()[d];
    }
    row(r, offsets);
  });
}

template <typename T>
T* data(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

void softmax_forward(const Tensor& x, int64_t dim, bool log, bool causal, const Tensor& out) {
  const auto d = static_cast<size_t>(dim);
  const int64_t len = x.shape()[d];
  if (len == 0) return;  // empty rows: nothing to normalise, and no memory to point into
  // Causal rows are the queries of trailing [Lq, Lk] matrices (dim is the last).
  const int64_t queries = causal ? x.shape()[d - 1] : 1;
  const int64_t xs = x.strides()[d], os = out.strides()[d];
  visit_all_floating(x.dtype(), "softmax", [&]<typename T>() {
    const T* in = data<const T>(x);
    T* o = data<T>(out);
    for_each_slice<2>(x.shape(), dim, {&x, &out}, [&](int64_t r, const std::array<int64_t, 2>& at) {
      // Query i sees keys j <= i + (Lk - Lq): bottom-right aligned, as in PyTorch.
      const int64_t visible = causal ? std::min(len, r % queries + (len - queries) + 1) : len;
      if constexpr (is_reduced_v<T>) {
        const std::span<float> row = load_row(0, in + at[0], len, xs);
        const std::span<float> result = scratch_row(1, len);
        softmax_row<float, true>(row.data(), result.data(), len, visible, 1, 1, log);
        store_row(result, o + at[1], os);
      } else if (xs == 1 && os == 1) {
        softmax_row<T, true>(in + at[0], o + at[1], len, visible, 1, 1, log);
      } else {
        softmax_row<T, false>(in + at[0], o + at[1], len, visible, xs, os, log);
      }
    });
  });
}

void softmax_backward(const Tensor& g, const Tensor& y, int64_t dim, bool log,
                      const Tensor& grad_x) {
  const auto d = static_cast<size_t>(dim);
  const int64_t len = y.shape()[d];
  if (len == 0) return;
  const std::array<int64_t, 3> s{g.strides()[d], y.strides()[d], grad_x.strides()[d]};
  const bool unit = s == std::array<int64_t, 3>{1, 1, 1};
  visit_all_floating(y.dtype(), "softmax_backward", [&]<typename T>() {
    const T *gp = data<const T>(g), *yp = data<const T>(y);
    T* dxp = data<T>(grad_x);
    for_each_slice<3>(
        y.shape(), dim, {&g, &y, &grad_x}, [&](int64_t, const std::array<int64_t, 3>& at) {
          if constexpr (is_reduced_v<T>) {
            const std::span<float> grad = load_row(0, gp + at[0], len, s[0]);
            const std::span<float> out = load_row(1, yp + at[1], len, s[1]);
            const std::span<float> result = scratch_row(2, len);
            softmax_backward_row<float, true>(grad.data(), out.data(), result.data(), len, s, log);
            store_row(result, dxp + at[2], s[2]);
          } else if (unit) {
            softmax_backward_row<T, true>(gp + at[0], yp + at[1], dxp + at[2], len, s, log);
          } else {
            softmax_backward_row<T, false>(gp + at[0], yp + at[1], dxp + at[2], len, s, log);
          }
        });
  });
}

}  // namespace

const SoftmaxKernels softmax_kernels{softmax_forward, softmax_backward};

}  // namespace remat::kernels::cpu
