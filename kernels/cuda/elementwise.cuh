// Elementwise maps on the GPU, with the signatures and semantics of
// kernels/cpu/elementwise.h: unary maps, binary maps with NumPy broadcasting,
// casting copies and fills. Outputs may be strided views. Arithmetic takes the
// floating dtypes (bfloat16/float16 computed in float32, rounded once) and,
// for the ops that make sense on indices, int64 and int32; copy and fill take
// every dtype.
#pragma once

#include "kernels/elementwise.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

void unary(UnaryOp op, const Tensor& x, const Tensor& out);
// out = a op b, with a and b broadcast to out's shape.
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
// out = a op scalar.
void binary_scalar(BinaryOp op, const Tensor& a, double scalar, const Tensor& out);
// dst = src converted to dst's dtype; src broadcast to dst's shape.
void copy(const Tensor& src, const Tensor& dst);
// fill (kernels/cuda/fill.cuh) for an output of any layout, strided views included.
void fill_strided(const Tensor& out, double value);

}  // namespace remat::kernels::cuda
