// Elementwise CPU kernels: unary maps, binary maps with NumPy broadcasting,
// casting copies and fills. Outputs may be strided views (in-place ops write
// through them). Arithmetic runs on float32 and float64 (the op layer computes
// bfloat16/float16 in float32); copy and fill take every dtype.
#pragma once

#include "kernels/elementwise.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

using kernels::BinaryOp;
using kernels::UnaryOp;

void unary(UnaryOp op, const Tensor& x, const Tensor& out);
// out = a op b, with a and b broadcast to out's shape.
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
// out = a op scalar.
void binary_scalar(BinaryOp op, const Tensor& a, double scalar, const Tensor& out);
// dst = src converted to dst's dtype; src broadcast to dst's shape.
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& out, double value);

}  // namespace remat::kernels::cpu
