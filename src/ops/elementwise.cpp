// Arithmetic: binary ops with broadcasting, ops with a scalar, and the unary
// maps whose derivatives are written with other ops.
#include "ops/elementwise_defs.h"

#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

std::vector<TensorMeta> broadcast_rule(const char* name, const std::vector<Tensor>& in) {
  check_same_dtype(name, in[0], in[1]);
  return {{broadcast_shapes(in[0].shape(), in[1].shape(), name), in[0].dtype(), in[0].device()}};
}

std::vector<TensorMeta> same_as_input(const std::vector<Tensor>& in, const Attrs&) {
  return {TensorMeta::of(in[0])};
}

Tensor scalar_call(const OpDef& def, const Tensor& x, double s) {
  return call1(def, {x}, ScalarAttrs{.scalar = s});
}

}  // namespace

const kernels::ElementwiseKernels& elementwise_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::elementwise_kernels,
                     REMAT_CUDA_KERNELS(elementwise_kernels));
}

OpDef binary_def(const char* name, BinaryOp kind, std::vector<int> save, BackwardFn backward) {
  OpDef def;
  def.name = name;
  def.shape = [name](const std::vector<Tensor>& in, const Attrs&) {
    return broadcast_rule(name, in);
  };
  def.forward = [name, kind](const std::vector<Tensor>& in, const Attrs&,
                             std::vector<Tensor>& out) {
    elementwise_kernels(name, out[0].device()).binary(kind, in[0], in[1], out[0]);
  };
  def.backward = std::move(backward);
  def.save_inputs = std::move(save);
  def.compute_reduced_in_float = false;  // the kernels take 16-bit operands
  return def;
}

OpDef scalar_def(const char* name, BinaryOp kind, std::vector<int> save, BackwardFn backward) {
  OpDef def;
  def.name = name;
  def.attrs = attrs_type<ScalarAttrs>();
  def.shape = same_as_input;
  def.forward = [name, kind](const std::vector<Tensor>& in, const Attrs& a,
                             std::vector<Tensor>& out) {
    elementwise_kernels(name, out[0].device())
        .binary_scalar(kind, in[0], a.get<ScalarAttrs>().scalar, out[0]);
  };
  def.backward = std::move(backward);
  def.save_inputs = std::move(save);
  def.compute_reduced_in_float = false;
  return def;
}

OpDef unary_def(const char* name, UnaryOp kind, Saves saves, BackwardFn backward) {
  OpDef def;
  def.name = name;
  def.shape = [name](const std::vector<Tensor>& in, const Attrs&) {
    check_floating(name, in[0]);
    return std::vector<TensorMeta>{TensorMeta::of(in[0])};
  };
  def.forward = [name, kind](const std::vector<Tensor>& in, const Attrs&,
                             std::vector<Tensor>& out) {
    elementwise_kernels(name, out[0].device()).unary(kind, in[0], out[0]);
  };
  def.backward = std::move(backward);
  if (saves == Saves::Input) def.save_inputs = {0};
  if (saves == Saves::Output) def.save_outputs = {0};
  def.compute_reduced_in_float = false;
  return def;
}

void register_elementwise_ops(Registry& r) {
  r.add(binary_def("add", BinaryOp::Add, {}, [](const BackwardArgs& a) {
    return std::vector<Tensor>{sum_to(a.grad(), a.input_meta[0].shape),
                               sum_to(a.grad(), a.input_meta[1].shape)};
  }));
  r.add(binary_def("sub", BinaryOp::Sub, {}, [](const BackwardArgs& a) {
    return std::vector<Tensor>{sum_to(a.grad(), a.input_meta[0].shape),
                               a.needs(1) ? sum_to(-a.grad(), a.input_meta[1].shape) : Tensor()};
  }));
  r.add(binary_def("mul", BinaryOp::Mul, {0, 1}, [](const BackwardArgs& a) {
    return std::vector<Tensor>{
        a.needs(0) ? sum_to(a.grad() * a.input(1), a.input_meta[0].shape) : Tensor(),
        a.needs(1) ? sum_to(a.grad() * a.input(0), a.input_meta[1].shape) : Tensor()};
  }));
  r.add(binary_def("div", BinaryOp::Div, {0, 1}, [](const BackwardArgs& a) {
    Tensor grad_a = a.grad() / a.input(1);
    return std::vector<Tensor>{
        a.needs(0) ? sum_to(grad_a, a.input_meta[0].shape) : Tensor(),
        a.needs(1) ? sum_to(-(grad_a * a.input(0) / a.input(1)), a.input_meta[1].shape) : Tensor()};
  }));
  r.add(scalar_def("add_scalar", BinaryOp::Add, {},
                   [](const BackwardArgs& a) { return std::vector<Tensor>{a.grad()}; }));
  r.add(scalar_def("mul_scalar", BinaryOp::Mul, {}, [](const BackwardArgs& a) {
    return std::vector<Tensor>{a.grad() * a.attrs.get<ScalarAttrs>().scalar};
  }));
  r.add(scalar_def("pow_scalar", BinaryOp::Pow, {0}, [](const BackwardArgs& a) {
    const double e = a.attrs.get<ScalarAttrs>().scalar;
    return std::vector<Tensor>{a.grad() * pow(a.input(0), e - 1.0) * e};
  }));
  r.add(unary_def("neg", UnaryOp::Neg, Saves::Nothing,
                  [](const BackwardArgs& a) { return std::vector<Tensor>{-a.grad()}; }));
  r.add(unary_def("exp", UnaryOp::Exp, Saves::Output, [](const BackwardArgs& a) {
    return std::vector<Tensor>{a.grad() * a.output(0)};
  }));
  r.add(unary_def("log", UnaryOp::Log, Saves::Input, [](const BackwardArgs& a) {
    return std::vector<Tensor>{a.grad() / a.input(0)};
  }));
  r.add(unary_def("sqrt", UnaryOp::Sqrt, Saves::Output, [](const BackwardArgs& a) {
    return std::vector<Tensor>{a.grad() / a.output(0) * 0.5};
  }));
}

}  // namespace remat::ops

namespace remat {

using ops::call1;
using ops::op;

Tensor add(const Tensor& a, const Tensor& b) { return call1(op<"add">(), {a, b}); }
Tensor sub(const Tensor& a, const Tensor& b) { return call1(op<"sub">(), {a, b}); }
Tensor mul(const Tensor& a, const Tensor& b) { return call1(op<"mul">(), {a, b}); }
Tensor div(const Tensor& a, const Tensor& b) { return call1(op<"div">(), {a, b}); }
Tensor add(const Tensor& a, double s) { return ops::scalar_call(ops::op<"add_scalar">(), a, s); }
Tensor mul(const Tensor& a, double s) { return ops::scalar_call(ops::op<"mul_scalar">(), a, s); }
Tensor pow(const Tensor& a, double e) { return ops::scalar_call(ops::op<"pow_scalar">(), a, e); }
Tensor neg(const Tensor& x) { return call1(op<"neg">(), {x}); }
Tensor exp(const Tensor& x) { return call1(op<"exp">(), {x}); }
Tensor log(const Tensor& x) { return call1(op<"log">(), {x}); }
Tensor sqrt(const Tensor& x) { return call1(op<"sqrt">(), {x}); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double s) { return add(a, s); }
Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
Tensor operator+(double s, const Tensor& a) { return add(a, s); }
Tensor operator-(double s, const Tensor& a) { return add(neg(a), s); }
Tensor operator*(double s, const Tensor& a) { return mul(a, s); }

}  // namespace remat
