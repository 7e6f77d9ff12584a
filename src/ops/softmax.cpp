// softmax and log_softmax along a dim, and their fused backward ops. Each
// backward is one row kernel (kernels/softmax.h), so the attention backward
// holds only the incoming gradient and the result, as PyTorch's does; the
// backward ops have composed backwards of their own (double backward).
#include "kernels/softmax.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

// Attributes DimAttrs: dim, and for softmax `causal` (the attention mask,
// fused: masked keys are never exponentiated). Backward reads the output
// only, and masked outputs are 0, so their gradient is 0 without a mask of
// its own.
const kernels::SoftmaxKernels& softmax_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::softmax_kernels, REMAT_CUDA_KERNELS(softmax_kernels));
}

OpDef softmax_def(const char* name, bool log, BackwardFn backward) {
  OpDef def;
  def.name = name;
  def.attrs = attrs_type<DimAttrs>();
  def.shape = [name, log](const std::vector<Tensor>& in, const Attrs& a) {
    check_floating(name, in[0]);
    const auto& attrs = a.get<DimAttrs>();
    const int64_t dim = wrap_dim(attrs.dim, in[0].dim(), name);
    if (attrs.causal) {
      REMAT_CHECK(!log, "{}: causal is a softmax option only", name);
      REMAT_CHECK_SHAPE(in[0].dim() >= 2 && dim == in[0].dim() - 1,
                        "{}: causal needs scores [..., Lq, Lk] and the last dim, got {} and dim {}",
                        name, describe(in), attrs.dim);
    }
    return std::vector<TensorMeta>{TensorMeta::of(in[0])};
  };
  def.forward = [name, log](const std::vector<Tensor>& in, const Attrs& a,
                            std::vector<Tensor>& out) {
    const auto& attrs = a.get<DimAttrs>();
    const int64_t dim = wrap_dim(attrs.dim, in[0].dim(), name);
    softmax_kernels(name, out[0].device())
        .forward(scalar_as_1d(in[0]), dim, log, attrs.causal, scalar_as_1d(out[0]));
  };
  def.backward = std::move(backward);
  def.save_outputs = {0};
  def.compute_reduced_in_float = false;  // the kernel takes 16-bit rows
  return def;
}

// Inputs (g, y): the gradient of a softmax's output and that output; attrs
// DimAttrs (dim).
OpDef softmax_backward_def(const char* name, bool log, BackwardFn backward) {
  OpDef def;
  def.name = name;
  def.attrs = attrs_type<DimAttrs>();
  def.shape = [name](const std::vector<Tensor>& in, const Attrs& a) {
    check_floating(name, in[1]);
    check_same_dtype(name, in[0], in[1]);
    REMAT_CHECK_SHAPE(in[0].shape() == in[1].shape(), "{}: gradient and output differ: {}", name,
                      describe(in));
    wrap_dim(a.get<DimAttrs>().dim, in[1].dim(), name);
    return std::vector<TensorMeta>{TensorMeta::of(in[1])};
  };
  def.forward = [name, log](const std::vector<Tensor>& in, const Attrs& a,
                            std::vector<Tensor>& out) {
    const int64_t dim = wrap_dim(a.get<DimAttrs>().dim, in[1].dim(), name);
    softmax_kernels(name, out[0].device())
        .backward(scalar_as_1d(in[0]), scalar_as_1d(in[1]), dim, log, scalar_as_1d(out[0]));
  };
  def.backward = std::move(backward);
  def.save_inputs = {0, 1};
  def.compute_reduced_in_float = false;
  return def;
}

Tensor softmax_backward(const OpDef& def, const Tensor& g, const Tensor& y, int64_t dim) {
  return call1(def, {g, y}, DimAttrs{.dim = dim});
}

}  // namespace

void register_softmax_ops(Registry& r) {
  r.add(softmax_def("softmax", false, [](const BackwardArgs& a) {
    return std::vector<Tensor>{softmax_backward(op<"softmax_backward">(), a.grad(), a.output(0),
                                                a.attrs.get<DimAttrs>().dim)};
  }));
  r.add(softmax_def("log_softmax", true, [](const BackwardArgs& a) {
    return std::vector<Tensor>{softmax_backward(op<"log_softmax_backward">(), a.grad(), a.output(0),
                                                a.attrs.get<DimAttrs>().dim)};
  }));

  // dx = y * (g - s), s = sum(g * y). With u the gradient of dx:
  // d/dg = y * (u - sum(u * y)) (the same op), d/dy = u * (g - s) - g * sum(u * y).
  r.add(softmax_backward_def("softmax_backward", false, [](const BackwardArgs& a) {
    const Tensor &u = a.grad(), &g = a.input(0), &y = a.input(1);
    const int64_t dim = a.attrs.get<DimAttrs>().dim;
    std::vector<Tensor> grads(2);
    if (a.needs(0)) grads[0] = softmax_backward(op<"softmax_backward">(), u, y, dim);
    if (a.needs(1)) {
      grads[1] = u * (g - sum(g * y, {dim}, true)) - g * sum(u * y, {dim}, true);
    }
    return grads;
  }));
  // dx = g - exp(y) * sum(g). d/dg = u - sum(u * exp(y)), d/dy = -u * exp(y) * sum(g).
  r.add(softmax_backward_def("log_softmax_backward", true, [](const BackwardArgs& a) {
    const Tensor &u = a.grad(), &g = a.input(0), &y = a.input(1);
    const int64_t dim = a.attrs.get<DimAttrs>().dim;
    const Tensor p = exp(y);
    std::vector<Tensor> grads(2);
    if (a.needs(0)) grads[0] = u - sum(u * p, {dim}, true);
    if (a.needs(1)) grads[1] = -(u * p * sum(g, {dim}, true));
    return grads;
  }));
}

}  // namespace remat::ops

namespace remat {

Tensor softmax(const Tensor& x, int64_t dim) {
  return ops::call1(ops::op<"softmax">(), {x}, ops::DimAttrs{.dim = dim});
}
Tensor log_softmax(const Tensor& x, int64_t dim) {
  return ops::call1(ops::op<"log_softmax">(), {x}, ops::DimAttrs{.dim = dim});
}

}  // namespace remat
