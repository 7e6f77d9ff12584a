// 2-d convolution (NCHW). conv2d's operands are (x, weight, bias), the bias
// possibly undefined.
#include "kernels/conv.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

// A pair attribute (stride, padding, dilation): two entries, each at least `min`.
std::vector<int64_t> pair_attr(const Attrs& a, const char* key, int64_t min) {
  const std::vector<int64_t>& v = a.ints(key);
  REMAT_CHECK(v.size() == 2 && v[0] >= min && v[1] >= min,
              "conv2d: {} must be 2 values >= {}, got [{}]", key, min, fmt::join(v, ", "));
  return v;
}

kernels::Conv2dParams conv_params(const Attrs& a) {
  const auto stride = pair_attr(a, "stride", 1), padding = pair_attr(a, "padding", 0),
             dilation = pair_attr(a, "dilation", 1);
  const int64_t groups = a.i("groups");
  REMAT_CHECK(groups >= 1, "conv2d: groups must be >= 1, got {}", groups);
  return {stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups};
}

// Output extent of one spatial dim (may come out <= 0: the caller reports it).
int64_t out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t span = dilation * (kernel - 1) + 1;
  const int64_t room = in + 2 * pad - span;
  return room < 0 ? 0 : room / stride + 1;
}

// Validates conv2d's operands (x, weight and the possibly undefined bias) and
// returns the output shape.
Shape conv2d_shape(const std::vector<Tensor>& in, const kernels::Conv2dParams& p) {
  REMAT_CHECK(in.size() == 3,
              "conv2d: expected (input, weight, bias), bias possibly undefined, got {} operands",
              in.size());
  const Tensor &x = in[0], &w = in[1];
  const bool has_bias = in[2].defined();
  check_floating("conv2d", x);
  check_same_dtype("conv2d", x, w);
  if (has_bias) check_same_dtype("conv2d", x, in[2]);
  REMAT_CHECK_SHAPE(x.dim() == 4 && w.dim() == 4,
                    "conv2d: expected a 4-d input [N, C, H, W] and a 4-d weight "
                    "[O, C/groups, kH, kW] ({})",
                    describe(in));
  const Shape &xs = x.shape(), &ws = w.shape();
  REMAT_CHECK_SHAPE(xs[1] % p.groups == 0 && ws[0] % p.groups == 0,
                    "conv2d: input channels {} and output channels {} must be divisible by "
                    "groups={} ({})",
                    xs[1], ws[0], p.groups, describe(in));
  REMAT_CHECK_SHAPE(ws[0] > 0 && ws[1] > 0 && ws[2] > 0 && ws[3] > 0 && ws[1] * p.groups == xs[1],
                    "conv2d: weight {} does not fit input {} with groups={} (expected "
                    "[O, {}, kH, kW] with positive sizes)",
                    shape_str(ws), shape_str(xs), p.groups, xs[1] / p.groups);
  if (has_bias) {
    REMAT_CHECK_SHAPE(in[2].shape() == Shape{ws[0]}, "conv2d: bias {} must be [{}] ({})",
                      shape_str(in[2].shape()), ws[0], describe(in));
  }
  const int64_t oh = out_size(xs[2], ws[2], p.stride_h, p.pad_h, p.dilation_h);
  const int64_t ow = out_size(xs[3], ws[3], p.stride_w, p.pad_w, p.dilation_w);
  REMAT_CHECK_SHAPE(oh > 0 && ow > 0,
                    "conv2d: kernel {}x{} (dilation {}x{}) does not fit input {} padded by {}x{}",
                    ws[2], ws[3], p.dilation_h, p.dilation_w, shape_str(xs), p.pad_h, p.pad_w);
  return {xs[0], ws[0], oh, ow};
}

const kernels::ConvKernels& conv_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::conv_kernels, REMAT_CUDA_KERNELS(conv_kernels));
}

Attrs with_shape(Attrs attrs, const char* key, const Shape& shape) {
  attrs.set(key, shape);
  return attrs;
}

// An internal backward op of conv2d: one output of the shape in attribute `shape_key`.
OpDef backward_def(const char* name, const char* shape_key, ForwardFn forward) {
  OpDef def;
  def.name = name;
  def.shape = [shape_key](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{{a.ints(shape_key), in[0].dtype(), in[0].device()}};
  };
  def.forward = std::move(forward);
  return def;
}

}  // namespace

void register_conv_ops(Registry& r) {
  OpDef def;
  def.name = "conv2d";
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{
        {conv2d_shape(in, conv_params(a)), in[0].dtype(), in[0].device()}};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const kernels::Conv2dParams p = conv_params(a);
    conv_kernels("conv2d", out[0].device())
        .conv2d(in[0].contiguous(), in[1].contiguous(), contiguous_operand(in[2]), p, out[0]);
  };
  def.save_inputs = {0, 1};
  def.backward = [](const BackwardArgs& a) {
    const Tensor& g = a.grad();
    std::vector<Tensor> grads(3);
    if (a.needs(0)) {
      grads[0] = call1(op<"conv2d_backward_input">(), {g, a.input(1)},
                       with_shape(a.attrs, "input_shape", a.input_meta[0].shape));
    }
    if (a.needs(1)) {
      grads[1] = call1(op<"conv2d_backward_weight">(), {g, a.input(0)},
                       with_shape(a.attrs, "weight_shape", a.input_meta[1].shape));
    }
    if (a.needs(2)) grads[2] = sum(g, {0, 2, 3});
    return grads;
  };
  r.add(std::move(def));

  // dx = col2im(W^T dY), from (grad_out, weight).
  r.add(backward_def("conv2d_backward_input", "input_shape",
                     [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
                       const kernels::Conv2dParams p = conv_params(a);
                       conv_kernels("conv2d_backward_input", out[0].device())
                           .backward_input(in[0].contiguous(), in[1].contiguous(), p, out[0]);
                     }));
  // dW = dY im2col(x)^T summed over the batch, from (grad_out, input).
  r.add(backward_def("conv2d_backward_weight", "weight_shape",
                     [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
                       const kernels::Conv2dParams p = conv_params(a);
                       conv_kernels("conv2d_backward_weight", out[0].device())
                           .backward_weight(in[0].contiguous(), in[1].contiguous(), p, out[0]);
                     }));
}

}  // namespace remat::ops

namespace remat {

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              std::vector<int64_t> stride, std::vector<int64_t> padding,
              std::vector<int64_t> dilation, int64_t groups) {
  return ops::call1(ops::op<"conv2d">(), {x, weight, bias},
                    {{"stride", std::move(stride)},
                     {"padding", std::move(padding)},
                     {"dilation", std::move(dilation)},
                     {"groups", groups}});
}

}  // namespace remat
