// Elementwise CPU kernels: unary maps, binary maps with NumPy broadcasting,
// casting copies and fills. Outputs may be strided views (in-place ops write
// through them). Arithmetic runs on float32 and float64 (the op layer computes
// bfloat16/float16 in float32); copy and fill take every dtype.
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

enum class UnaryOp { Neg, Exp, Log, Sqrt, Tanh, Sigmoid, Relu, Gelu, GeluTanh, Abs };
enum class BinaryOp {
  Add,
  Sub,
  Mul,
  Div,
  Pow,
  Maximum,
  // Gradient maps: (incoming gradient, saved value) -> gradient of the input.
  ReluBackward,      // g * (y > 0)
  GeluBackward,      // g * d/dx gelu_erf(x)
  GeluTanhBackward,  // g * d/dx gelu_tanh(x)
  TanhBackward,      // g * (1 - y^2)
  SigmoidBackward,   // g * y * (1 - y)
};

void unary(UnaryOp op, const Tensor& x, const Tensor& out);
// out = a op b, with a and b broadcast to out's shape.
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
// out = a op scalar.
void binary_scalar(BinaryOp op, const Tensor& a, double scalar, const Tensor& out);
// dst = src converted to dst's dtype; src broadcast to dst's shape.
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& out, double value);

}  // namespace remat::kernels::cpu
