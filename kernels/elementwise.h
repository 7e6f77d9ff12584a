// The elementwise kernels every backend implements (kernels/cpu/elementwise.cpp,
// kernels/cuda/elementwise.cu), declared once, with the operations they
// compute (the formulas: kernels/scalar_math.h). Operands may be strided
// views, outputs included (in-place ops write through them), and inputs are
// broadcast (NumPy rules) to the output's shape. Arithmetic takes float32 and
// float64, and int64 and int32 for the ops integer_op admits (Error for the
// others); bfloat16/float16 are computed in float32 element by element,
// rounding once on store, on both devices. copy and fill take every dtype.
#pragma once

#include "remat/core/tensor.h"

namespace remat::kernels {

enum class UnaryOp { Neg, Exp, Log, Sqrt, Tanh, Sigmoid, Relu, Gelu, GeluTanh, Abs };
enum class BinaryOp {
  Add,
  Sub,
  Mul,
  Div,
  Pow,
  Maximum,  // NaN-propagating, like torch.maximum
  // Gradient maps: (incoming gradient, saved value) -> gradient of the input.
  ReluBackward,      // 0 where y <= 0, else g (PyTorch's threshold_backward: NaN passes g)
  GeluBackward,      // g * d/dx gelu_erf(x)
  GeluTanhBackward,  // g * d/dx gelu_tanh(x)
  TanhBackward,      // g * (1 - y^2)
  SigmoidBackward,   // g * y * (1 - y)
};

struct ElementwiseKernels {
  void (*unary)(UnaryOp op, const Tensor& x, const Tensor& out);
  // out = a op b.
  void (*binary)(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
  // out = a op scalar, the scalar rounded to the compute type first (float32
  // for float32 and 16-bit tensors).
  void (*binary_scalar)(BinaryOp op, const Tensor& a, double scalar, const Tensor& out);
  // dst = src converted to dst's dtype (kernels::convert); both on this device.
  void (*copy)(const Tensor& src, const Tensor& dst);
  // Every element of out = value in out's dtype (kernels::fill_value); an
  // expanded out too, every address getting the same value.
  void (*fill)(const Tensor& out, double value);
  // dst = src between this backend's device and another (the host, or a
  // second device): same shape and dtype, both contiguous. Null on the CPU,
  // where copy serves.
  void (*copy_between_devices)(const Tensor& src, const Tensor& dst);
};

namespace cpu {
extern const ElementwiseKernels elementwise_kernels;
}
namespace cuda {
extern const ElementwiseKernels elementwise_kernels;
}

}  // namespace remat::kernels
