// Shapes and strides (in elements), and the NumPy broadcasting rule.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "remat/core/small_vector.h"

namespace remat {

// Inline up to 6 dims (a heap block past that): an op makes and copies
// several shapes, and allocating each was most of its host overhead.
inline constexpr size_t kInlineDims = 6;
using Shape = SmallVector<int64_t, kInlineDims>;
using Strides = SmallVector<int64_t, kInlineDims>;

// The element count of shape. Throws ShapeError naming the shape when a size
// is negative or the product of the nonzero sizes overflows int64 (so that
// contiguous strides fit too, whatever the order of the dims).
int64_t numel_of(const Shape& shape);
// The byte count of shape's elements, throwing ShapeError when it overflows int64.
int64_t nbytes_of(const Shape& shape, size_t element_size);
// Row-major strides (size-0 and size-1 dims count as 1); validates like numel_of.
Strides contiguous_strides(const Shape& shape);
// Wraps a possibly negative dim into [0, ndim); throws ShapeError naming op.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
// The broadcast of two shapes; throws ShapeError naming op when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
std::string shape_str(const Shape& shape);

}  // namespace remat
