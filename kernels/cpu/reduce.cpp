// Reductions on the CPU (contract: kernels/reduce.h): one output per
// iteration of a loop over the kept dims, in parallel with OpenMP.
#include "kernels/reduce.h"

#include <algorithm>
#include <limits>

#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"
#include "kernels/elementwise.h"

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

void sum(const Tensor& x, const std::vector<int64_t>& dims, double scale, const Tensor& out) {
  ReductionLayout l = split_dims(x, dims);
  const int64_t outer = numel_of(l.kept_shape);
  const int64_t inner = numel_of(l.reduced_shape);
  visit_arith_and_reduced(x.dtype(), "sum", [&]<typename T>() {
    using Acc = sum_acc_t<T>;
    const T* in = static_cast<const T*>(x.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    StridedLayout<1> red = merge_dims<1>(l.reduced_shape, {l.reduced_strides});
    const int64_t run_len = red.shape.back(), run_stride = red.strides[0].back();
    Shape run_outer_shape(red.shape.begin(), red.shape.end() - 1);
    Strides run_outer_strides(red.strides[0].begin(), red.strides[0].end() - 1);
    const int64_t runs = inner == 0 ? 0 : inner / run_len;
    const StridedLayout<1> kept = merge_dims<1>(l.kept_shape, {l.kept_strides});
    if (outer > 1 && kept.shape.size() == 1 && kept.strides[0][0] == 1 && run_stride != 1) {
      // The kept dims are one contiguous run and the reduced ones are not (a
      // bias gradient: [rows, columns] summed over rows). Each task sums a
      // block of neighbouring outputs row by row, reading along the rows
      // instead of down the columns; every output still adds its terms in
      // the general loop's order, so the result is the same.
      constexpr int64_t kBlock = 128;
      const bool parallel = outer * inner >= 2 * kParallelGrain && outer > kBlock;
      parallel_for((outer + kBlock - 1) / kBlock, parallel, [&](int64_t block) {
        const int64_t first = block * kBlock, count = std::min(kBlock, outer - first);
        Acc acc[kBlock] = {};
        for (int64_t r = 0; r < runs; ++r) {
          const T* row = in + offset_of(r, run_outer_shape, run_outer_strides) + first;
          for (int64_t k = 0; k < run_len; ++k) {
            const T* p = row + k * run_stride;
#pragma omp simd
            for (int64_t c = 0; c < count; ++c) acc[c] += static_cast<Acc>(p[c]);
          }
        }
        for (int64_t c = 0; c < count; ++c)
          o[first + c] = static_cast<T>(acc[c] * static_cast<Acc>(scale));
      });
      return;
    }
    parallel_for(outer, outer * inner >= 2 * kParallelGrain && outer > 1, [&](int64_t i) {
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
    });
  });
}

void max_along(const Tensor& x, int64_t dim, const Tensor& values, const Tensor& indices) {
  ReductionLayout l = split_dims(x, {dim});
  const int64_t outer = numel_of(l.kept_shape);
  const int64_t len = l.reduced_shape[0], stride = l.reduced_strides[0];
  visit_arith(x.dtype(), "max", [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* v = static_cast<T*>(values.data_ptr());
    int64_t* idx = static_cast<int64_t*>(indices.data_ptr());
    parallel_for(outer, outer * len >= 2 * kParallelGrain, [&](int64_t i) {
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
    });
  });
}

void scatter_along(const Tensor& grad, const Tensor& indices, int64_t dim, const Tensor& out) {
  ReductionLayout l = split_dims(out, {dim});
  REMAT_CHECK(grad.shape() == l.kept_shape && indices.shape() == l.kept_shape,
              "max backward: grad {} and indices {} must have the output {}'s shape without dim {}",
              TensorMeta::of(grad).str(), TensorMeta::of(indices).str(), TensorMeta::of(out).str(),
              dim);
  elementwise_kernels.fill(out, 0.0);
  const int64_t outer = numel_of(l.kept_shape), stride = l.reduced_strides[0];
  visit_floating(out.dtype(), "max backward", [&]<typename T>() {
    const T* pg = static_cast<const T*>(grad.data_ptr());
    const int64_t* pi = static_cast<const int64_t*>(indices.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    for (int64_t i = 0; i < outer; ++i) {
      const int64_t at = pi[offset_of(i, l.kept_shape, indices.strides())];
      o[offset_of(i, l.kept_shape, l.kept_strides) + at * stride] =
          pg[offset_of(i, l.kept_shape, grad.strides())];
    }
  });
}

}  // namespace

const ReduceKernels reduce_kernels{sum, max_along, scatter_along};

}  // namespace remat::kernels::cpu
