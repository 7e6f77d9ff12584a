// N operands viewed over one shape, each with its own strides (0 where
// broadcast), with adjacent dims that are contiguous in every operand merged:
// the host-side layout that both the CPU loops and the CUDA indexers consume.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "remat/core/tensor.h"

namespace remat::kernels {

template <size_t N>
struct StridedLayout {
  Shape shape;                     // merged dims
  std::array<Strides, N> strides;  // per operand, in elements
};

template <size_t N>
StridedLayout<N> merge_dims(const Shape& shape, const std::array<Strides, N>& strides) {
  StridedLayout<N> out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool mergeable = !out.shape.empty();
    for (size_t k = 0; k < N && mergeable; ++k) {
      mergeable = out.strides[k].back() == strides[k][d] * shape[d];
    }
    if (mergeable) {
      out.shape.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) out.strides[k].back() = strides[k][d];
    } else {
      out.shape.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) out.strides[k].push_back(strides[k][d]);
    }
  }
  if (out.shape.empty()) {  // a scalar
    out.shape.push_back(1);
    for (size_t k = 0; k < N; ++k) out.strides[k].push_back(0);
  }
  return out;
}

// x's dims split into kept (outer) and reduced (inner) groups, in order: the
// layout every reduction kernel starts from.
struct ReductionLayout {
  Shape kept_shape, reduced_shape;
  Strides kept_strides, reduced_strides;
};

inline ReductionLayout split_dims(const Tensor& x, const std::vector<int64_t>& dims) {
  ReductionLayout l;
  for (int64_t d = 0; d < x.dim(); ++d) {
    const bool reduced = std::find(dims.begin(), dims.end(), d) != dims.end();
    (reduced ? l.reduced_shape : l.kept_shape).push_back(x.shape()[static_cast<size_t>(d)]);
    (reduced ? l.reduced_strides : l.kept_strides).push_back(x.strides()[static_cast<size_t>(d)]);
  }
  return l;
}

}  // namespace remat::kernels
