// The elementwise operations, named once for both backends (kernels/cpu and
// kernels/cuda compute the same formulas).
#pragma once

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

}  // namespace remat::kernels
