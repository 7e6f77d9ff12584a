// Reductions: sum and mean over dims, max and argmax along a dim.
#include "kernels/reduce.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

const kernels::ReduceKernels& reduce_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::reduce_kernels, REMAT_CUDA_KERNELS(reduce_kernels));
}

// The gradient of a reduction, broadcast back over the reduced dims.
Tensor expand_reduced(const Tensor& g, const TensorMeta& input, const std::vector<int64_t>& dims,
                      bool keepdim) {
  Tensor kept = keepdim ? g : reshape(g, reduced_shape(input.shape, dims, true));
  return expand(kept, input.shape);
}

// 1 / the count of elements a mean over dims averages: infinite for a mean
// over none, which is then 0 * inf = NaN, as in PyTorch.
double mean_scale(const Shape& shape, const std::vector<int64_t>& dims) {
  int64_t count = 1;
  for (int64_t d : dims) count *= shape[static_cast<size_t>(d)];
  return 1.0 / static_cast<double>(count);
}

OpDef sum_def(const char* name, bool mean) {
  OpDef def;
  def.name = name;
  def.attrs = attrs_type<ReduceAttrs>();
  def.compute_reduced_in_float = false;  // the kernel sums 16-bit values in float64
  def.shape = [name, mean](const std::vector<Tensor>& in, const Attrs& a) {
    // An integer mean has no integer answer (PyTorch refuses it too).
    if (mean) check_floating(name, in[0]);
    const auto& attrs = a.get<ReduceAttrs>();
    auto dims = normalize_dims(name, attrs.dims, in[0].dim());
    return std::vector<TensorMeta>{
        {reduced_shape(in[0].shape(), dims, attrs.keepdim), in[0].dtype(), in[0].device()}};
  };
  def.forward = [name, mean](const std::vector<Tensor>& in, const Attrs& a,
                             std::vector<Tensor>& out) {
    auto dims = normalize_dims(name, a.get<ReduceAttrs>().dims, in[0].dim());
    const double scale = mean ? mean_scale(in[0].shape(), dims) : 1.0;
    reduce_kernels(name, out[0].device()).sum(in[0], dims, scale, out[0]);
  };
  def.backward = [name, mean](const BackwardArgs& a) {
    const TensorMeta& x = a.input_meta[0];
    const auto& attrs = a.attrs.get<ReduceAttrs>();
    auto dims = normalize_dims(name, attrs.dims, static_cast<int64_t>(x.shape.size()));
    Tensor g = a.grad();
    if (mean) g = g * mean_scale(x.shape, dims);
    return std::vector<Tensor>{expand_reduced(g, x, dims, attrs.keepdim)};
  };
  return def;
}

}  // namespace

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const size_t lead = grad.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t d = 0; d < grad.shape().size(); ++d) {
    if (d < lead || (shape[d - lead] == 1 && grad.shape()[d] != 1)) {
      dims.push_back(static_cast<int64_t>(d));
    }
  }
  if (dims.empty()) return reshape(grad, shape);
  return reshape(sum(grad, dims, true), shape);
}

void register_reduction_ops(Registry& r) {
  r.add(sum_def("sum", false));
  r.add(sum_def("mean", true));

  OpDef max_def;
  max_def.name = "max";
  max_def.visible_outputs = 2;
  max_def.attrs = attrs_type<MaxAttrs>();
  max_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const auto& attrs = a.get<MaxAttrs>();
    int64_t dim = wrap_dim(attrs.dim, in[0].dim(), "max");
    // A max along an empty dim has no value; other dims may be empty (PyTorch's rule).
    REMAT_CHECK_SHAPE(in[0].dim() == 0 || in[0].shape()[static_cast<size_t>(dim)] > 0,
                      "max: dim {} of {} is empty", dim, TensorMeta::of(in[0]).str());
    Shape s = reduced_shape(in[0].shape(), {dim}, attrs.keepdim);
    return std::vector<TensorMeta>{{s, in[0].dtype(), in[0].device()}, {s, kInt64, in[0].device()}};
  };
  max_def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    int64_t dim = wrap_dim(a.get<MaxAttrs>().dim, in[0].dim(), "max");
    const Tensor x = scalar_as_1d(in[0]);
    reduce_kernels("max", in[0].device()).max_along(x, dim, out[0], out[1]);
  };
  max_def.save_outputs = {1};
  max_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{call1(
        op<"max_backward">(), {a.grad(), a.output(1)},
        MaxBackwardAttrs{.max = a.attrs.get<MaxAttrs>(), .input_shape = a.input_meta[0].shape})};
  };
  r.add(std::move(max_def));

  // Scatters the gradient of max to where the maxima were.
  OpDef max_backward;
  max_backward.name = "max_backward";
  max_backward.attrs = attrs_type<MaxBackwardAttrs>();
  max_backward.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{
        {a.get<MaxBackwardAttrs>().input_shape, in[0].dtype(), in[0].device()}};
  };
  max_backward.forward = [](const std::vector<Tensor>& in, const Attrs& a,
                            std::vector<Tensor>& out) {
    const MaxAttrs& max = a.get<MaxBackwardAttrs>().max;
    int64_t dim = wrap_dim(max.dim, out[0].dim(), "max_backward");
    Tensor g = in[0], idx = in[1];
    if (max.keepdim) {
      Shape squeezed = reduced_shape(out[0].shape(), {dim}, false);
      g = g.reshape(squeezed);
      idx = idx.reshape(squeezed);
    }
    const Tensor o = scalar_as_1d(out[0]);
    reduce_kernels("max_backward", out[0].device()).scatter_along(g, idx, dim, o);
  };
  r.add(std::move(max_backward));
}

}  // namespace remat::ops

namespace remat {

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return ops::call1(ops::op<"sum">(), {x}, ops::ReduceAttrs{.dims = dims, .keepdim = keepdim});
}
Tensor sum(const Tensor& x) { return sum(x, {}, false); }
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return ops::call1(ops::op<"mean">(), {x}, ops::ReduceAttrs{.dims = dims, .keepdim = keepdim});
}
Tensor mean(const Tensor& x) { return mean(x, {}, false); }
MaxResult max(const Tensor& x, int64_t dim, bool keepdim) {
  auto outs = ops::call(ops::op<"max">(), {x}, ops::MaxAttrs{.dim = dim, .keepdim = keepdim});
  return {outs[0], outs[1]};
}
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) { return max(x, dim, keepdim).indices; }

}  // namespace remat
