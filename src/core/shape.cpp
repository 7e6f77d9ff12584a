#include "remat/core/shape.h"

#include <algorithm>

#include "remat/core/error.h"

namespace remat {

namespace {

// Product of the sizes with zeros counted as ones; every count and stride of
// shape is bounded by it, so one overflow check covers them all.
int64_t nonzero_product(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    REMAT_CHECK_SHAPE(s >= 0, "shape {} has a negative size", shape_str(shape));
    REMAT_CHECK_SHAPE(!__builtin_mul_overflow(n, std::max<int64_t>(s, 1), &n),
                      "shape {} has more elements than int64 can count", shape_str(shape));
  }
  return n;
}

}  // namespace

int64_t numel_of(const Shape& shape) {
  const int64_t n = nonzero_product(shape);
  return std::find(shape.begin(), shape.end(), 0) == shape.end() ? n : 0;
}

int64_t nbytes_of(const Shape& shape, size_t element_size) {
  int64_t bytes = 0;
  REMAT_CHECK_SHAPE(
      !__builtin_mul_overflow(numel_of(shape), static_cast<int64_t>(element_size), &bytes),
      "shape {} of {}-byte elements has more bytes than int64 can count", shape_str(shape),
      element_size);
  return bytes;
}

Strides contiguous_strides(const Shape& shape) {
  nonzero_product(shape);
  Strides strides(shape.size());
  int64_t running = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = running;
    running *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  REMAT_CHECK_SHAPE(dim >= lo && dim <= hi, "{}: dim {} out of range for a {}-d tensor", op, dim,
                    ndim);
  return dim < 0 ? dim + std::max<int64_t>(ndim, 1) : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    REMAT_CHECK_SHAPE(da == db || da == 1 || db == 1,
                      "{}: shapes {} and {} do not broadcast (dim {}: {} vs {})", op, shape_str(a),
                      shape_str(b), i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace remat
