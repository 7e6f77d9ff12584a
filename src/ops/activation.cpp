// Activations and softmax. Their derivatives are written with gradient maps
// (internal ops) or with other ops, from what each op saves.
#include "kernels/cpu/softmax.h"
#include "ops/dispatch.h"
#include "ops/elementwise_defs.h"
#include "remat/ops.h"

#if defined(REMAT_WITH_CUDA)
#include "kernels/cuda/softmax.cuh"
#endif

namespace remat::ops {
namespace {

Tensor grad_map(const OpDef& def, const Tensor& g, const Tensor& saved) {
  return call1(def, {g, saved});
}

// attrs: dim; softmax also takes "causal" (the attention mask, fused: masked
// keys are never exponentiated). Backward reads the output only, and masked
// outputs are 0, so their gradient is 0 without a mask of its own.
bool is_causal(const Attrs& a) { return a.has("causal") && a.b("causal"); }

OpDef softmax_def(const char* name, bool log, BackwardFn backward) {
  OpDef def;
  def.name = name;
  def.shape = [name, log](const std::vector<Tensor>& in, const Attrs& a) {
    check_floating(name, in[0]);
    const int64_t dim = wrap_dim(a.i("dim"), in[0].dim(), name);
    if (is_causal(a)) {
      REMAT_CHECK(!log, "{}: causal is a softmax option only", name);
      REMAT_CHECK_SHAPE(in[0].dim() >= 2 && dim == in[0].dim() - 1,
                        "{}: causal needs scores [..., Lq, Lk] and the last dim, got {} and dim {}",
                        name, describe(in), a.i("dim"));
    }
    return std::vector<TensorMeta>{TensorMeta::of(in[0])};
  };
  def.forward = [name, log](const std::vector<Tensor>& in, const Attrs& a,
                            std::vector<Tensor>& out) {
    const int64_t dim = wrap_dim(a.i("dim"), in[0].dim(), name);
    const Tensor x = scalar_as_1d(in[0]), y = scalar_as_1d(out[0]);
    on_device(
        name, out[0].device(), [&] { kernels::cpu::softmax(x, dim, log, is_causal(a), y); },
        REMAT_CUDA_KERNEL(kernels::cuda::softmax(x, dim, log, is_causal(a), y)));
  };
  def.backward = std::move(backward);
  def.save_outputs = {0};
  return def;
}

}  // namespace

void register_activation_ops(Registry& r) {
  r.add(binary_def("relu_backward", BinaryOp::ReluBackward, {}, nullptr));
  r.add(binary_def("gelu_backward", BinaryOp::GeluBackward, {}, nullptr));
  r.add(binary_def("gelu_tanh_backward", BinaryOp::GeluTanhBackward, {}, nullptr));
  r.add(binary_def("tanh_backward", BinaryOp::TanhBackward, {}, nullptr));
  r.add(binary_def("sigmoid_backward", BinaryOp::SigmoidBackward, {}, nullptr));

  r.add(unary_def("relu", UnaryOp::Relu, Saves::Output, [](const BackwardArgs& a) {
    return std::vector<Tensor>{grad_map(op<"relu_backward">(), a.grad(), a.output(0))};
  }));
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

  // dx = y * (g - sum(g * y, dim))
  r.add(softmax_def("softmax", false, [](const BackwardArgs& a) {
    // PyTorch's arithmetic, in two statements so that g * y is freed before
    // the two result-sized tensors exist (in attention: [B, heads, T, T]).
    const Tensor& y = a.output(0);
    const Tensor dot = sum(a.grad() * y, {a.attrs.i("dim")}, true);
    return std::vector<Tensor>{y * (a.grad() - dot)};
  }));
  // dx = g - exp(y) * sum(g, dim)
  r.add(softmax_def("log_softmax", true, [](const BackwardArgs& a) {
    const Tensor& y = a.output(0);
    return std::vector<Tensor>{a.grad() - exp(y) * sum(a.grad(), {a.attrs.i("dim")}, true)};
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
Tensor softmax(const Tensor& x, int64_t dim) {
  return ops::call1(ops::op<"softmax">(), {x}, {{"dim", dim}});
}
Tensor log_softmax(const Tensor& x, int64_t dim) {
  return ops::call1(ops::op<"log_softmax">(), {x}, {{"dim", dim}});
}

}  // namespace remat
