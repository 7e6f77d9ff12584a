// Activations. Their derivatives are written with gradient maps
// (internal ops) or with other ops, from what each op saves.
#include "ops/dispatch.h"
#include "ops/elementwise_defs.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

Tensor grad_map(const OpDef& def, const Tensor& g, const Tensor& saved) {
  return call1(def, {g, saved});
}

}  // namespace

void register_activation_ops(Registry& r) {
  r.add(binary_def("relu_backward", BinaryOp::ReluBackward, {}, nullptr));
  r.add(binary_def("gelu_backward", BinaryOp::GeluBackward, {}, nullptr));
  r.add(binary_def("gelu_tanh_backward", BinaryOp::GeluTanhBackward, {}, nullptr));
  r.add(binary_def("tanh_backward", BinaryOp::TanhBackward, {}, nullptr));
  r.add(binary_def("sigmoid_backward", BinaryOp::SigmoidBackward, {}, nullptr));

  OpDef relu = unary_def("relu", UnaryOp::Relu, Saves::Output, [](const BackwardArgs& a) {
    return std::vector<Tensor>{grad_map(op<"relu_backward">(), a.grad(), a.output(0))};
  });
  relu.zero_mask_outputs = {0};
  r.add(std::move(relu));
  r.add(unary_def("gelu", UnaryOp::Gelu, Saves::Input, [](const BackwardArgs& a) {
    return std::vector<Tensor>{grad_map(op<"gelu_backward">(), a.grad(), a.input(0))};
  }));
  r.add(unary_def("gelu_tanh", UnaryOp::GeluTanh, Saves::Input, [](const BackwardArgs& a) {
    return std::vector<Tensor>{grad_map(op<"gelu_tanh_backward">(), a.grad(), a.input(0))};
  }));
  r.add(unary_def("tanh", UnaryOp::Tanh, Saves::Output, [](const BackwardArgs& a) {
    return std::vector<Tensor>{grad_map(op<"tanh_backward">(), a.grad(), a.output(0))};
  }));
  r.add(unary_def("sigmoid", UnaryOp::Sigmoid, Saves::Output, [](const BackwardArgs& a) {
    return std::vector<Tensor>{grad_map(op<"sigmoid_backward">(), a.grad(), a.output(0))};
  }));
}

}  // namespace remat::ops

namespace remat {

Tensor relu(const Tensor& x) { return ops::call1(ops::op<"relu">(), {x}); }
Tensor tanh(const Tensor& x) { return ops::call1(ops::op<"tanh">(), {x}); }
Tensor sigmoid(const Tensor& x) { return ops::call1(ops::op<"sigmoid">(), {x}); }
Tensor gelu(const Tensor& x, const std::string& approximate) {
  REMAT_CHECK(approximate == "none" || approximate == "tanh",
              "gelu: approximate must be \"none\" or \"tanh\", got \"{}\"", approximate);
  return ops::call1(approximate == "tanh" ? ops::op<"gelu_tanh">() : ops::op<"gelu">(), {x});
}

}  // namespace remat
