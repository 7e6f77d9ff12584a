#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <limits>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

int64_t offset_of(int64_t linear, const Shape& shape, const Strides& strides) {
  int64_t offset = 0;
  for (size_t d = shape.size(); d-- > 0;) {
    offset += (linear % shape[d]) * strides[d];
    linear /= shape[d];
  }
  return offset;
}

}  // namespace

void sum(const Tensor& x, const std::vector<int64_t>& dims, double scale, const Tensor& out) {
  ReductionLayout l = split_dims(x, dims);
  const int64_t outer = numel_of(l.kept_shape);
  const int64_t inner = numel_of(l.reduced_shape);
  auto run = [&]<typename T, typename Acc>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    StridedLayout<1> red = merge_dims<1>(l.reduced_shape, {l.reduced_strides});
    const int64_t run_len = red.shape.back(), run_stride = red.strides[0].back();
    Shape run_outer_shape(red.shape.begin(), red.shape.end() - 1);
    Strides run_outer_strides(red.strides[0].begin(), red.strides[0].end() - 1);
    const int64_t runs = inner == 0 ? 0 : inner / run_len;
#pragma omp parallel for if (outer * inner >= 2 * kParallelGrain && outer > 1) schedule(static)
    for (int64_t i = 0; i < outer; ++i) {
      // An offset, not a pointer: an empty input may have no memory to point into.
      const int64_t base = offset_of(i, l.kept_shape, l.kept_strides);
      Acc acc = 0;
      for (int64_t r = 0; r < runs; ++r) {
        const T* p = in + base + offset_of(r, run_outer_shape, run_outer_strides);
        if (run_stride == 1) {
#pragma omp simd reduction(+ : acc)
          for (int64_t k = 0; k < run_len; ++k) acc += static_cast<Acc>(p[k]);
        } else {
          for (int64_t k = 0; k < run_len; ++k) acc += static_cast<Acc>(p[k * run_stride]);
        }
      }
      o[i] = static_cast<T>(acc * static_cast<Acc>(scale));
    }
  };
  switch (x.dtype()) {
    case kFloat32: run.operator()<float, double>(); break;
    case kFloat64: run.operator()<double, double>(); break;
    case kInt64: run.operator()<int64_t, int64_t>(); break;
    case kInt32: run.operator()<int32_t, int64_t>(); break;
    default: throw Error(fmt::format("sum: no CPU kernel for dtype {}", x.dtype()));
  }
}

void max_along(const Tensor& x, int64_t dim, const Tensor& values, const Tensor& indices) {
  ReductionLayout l = split_dims(x, {dim});
  const int64_t outer = numel_of(l.kept_shape);
  const int64_t len = l.reduced_shape[0], stride = l.reduced_strides[0];
  auto run = [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* v = static_cast<T*>(values.data_ptr());
    int64_t* idx = static_cast<int64_t*>(indices.data_ptr());
#pragma omp parallel for if (outer * len >= 2 * kParallelGrain) schedule(static)
    for (int64_t i = 0; i < outer; ++i) {
      const T* p = in + offset_of(i, l.kept_shape, l.kept_strides);
      T best = p[0];
      int64_t best_k = 0;
      for (int64_t k = 1; k < len; ++k) {
        T value = p[k * stride];
        if (value > best || (value != value && best == best)) {  // NaN wins, like PyTorch
          best = value;
          best_k = k;
        }
      }
      v[i] = best;
      idx[i] = best_k;
    }
  };
  switch (x.dtype()) {
    case kFloat32: run.operator()<float>(); break;
    case kFloat64: run.operator()<double>(); break;
    case kInt64: run.operator()<int64_t>(); break;
    case kInt32: run.operator()<int32_t>(); break;
    default: throw Error(fmt::format("max: no CPU kernel for dtype {}", x.dtype()));
  }
}

}  // namespace remat::kernels::cpu

namespace remat::kernels::cpu {

void scatter_along(const Tensor& grad, const Tensor& indices, int64_t dim, const Tensor& out) {
  fill(out, 0.0);
  Tensor g = grad.contiguous(), idx = indices.contiguous();
  ReductionLayout l = split_dims(out, {dim});
  const int64_t outer = numel_of(l.kept_shape), stride = l.reduced_strides[0];
  auto run = [&]<typename T>() {
    const T* pg = static_cast<const T*>(g.data_ptr());
    const int64_t* pi = static_cast<const int64_t*>(idx.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    for (int64_t i = 0; i < outer; ++i) {
      o[offset_of(i, l.kept_shape, l.kept_strides) + pi[i] * stride] = pg[i];
    }
  };
  switch (out.dtype()) {
    case kFloat32: run.operator()<float>(); break;
    case kFloat64: run.operator()<double>(); break;
    default: throw Error(fmt::format("max backward: no CPU kernel for dtype {}", out.dtype()));
  }
}

}  // namespace remat::kernels::cpu
