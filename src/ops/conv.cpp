// 2-d convolution (NCHW). conv2d's operands are (x, weight, bias), the bias
// possibly undefined.
#include "kernels/conv.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

// A pair parameter (stride, padding, dilation): both values at least `min`.
void check_pair(const char* key, int64_t h, int64_t w, int64_t min) {
  REMAT_CHECK(h >= min && w >= min, "conv2d: {} must be 2 values >= {}, got [{}, {}]", key, min, h,
              w);
}

const Conv2dAttrs& conv_params(const Conv2dAttrs& p) {
  check_pair("stride", p.stride_h, p.stride_w, 1);
  check_pair("padding", p.pad_h, p.pad_w, 0);
  check_pair("dilation", p.dilation_h, p.dilation_w, 1);
  REMAT_CHECK(p.groups >= 1, "conv2d: groups must be >= 1, got {}", p.groups);
  return p;
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

// An internal backward op of conv2d: one output, of the attributes' grad_shape.
OpDef backward_def(const char* name, ForwardFn forward) {
  OpDef def;
  def.name = name;
  def.attrs = attrs_type<Conv2dBackwardAttrs>();
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{
        {a.get<Conv2dBackwardAttrs>().grad_shape, in[0].dtype(), in[0].device()}};
  };
  def.forward = std::move(forward);
  def.compute_reduced_in_float = false;  // the CPU kernel takes 16-bit operands itself
  return def;
}

}  // namespace

void register_conv_ops(Registry& r) {
  OpDef def;
  def.name = "conv2d";
  def.attrs = attrs_type<Conv2dAttrs>();
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{
        {conv2d_shape(in, conv_params(a.get<Conv2dAttrs>())), in[0].dtype(), in[0].device()}};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    conv_kernels("conv2d", out[0].device())
        .conv2d(in[0].contiguous(), in[1].contiguous(), contiguous_operand(in[2]),
                a.get<Conv2dAttrs>(), out[0]);
  };
  def.save_inputs = {0, 1};
  // The CPU kernel takes bfloat16 to oneDNN, other 16-bit types to float32.
  def.compute_reduced_in_float = false;
  def.backward = [](const BackwardArgs& a) {
    const Tensor& g = a.grad();
    const Conv2dAttrs& conv = a.attrs.get<Conv2dAttrs>();
    std::vector<Tensor> grads(3);
    if (a.needs(0)) {
      grads[0] = call1(op<"conv2d_backward_input">(), {g, a.input(1)},
                       Conv2dBackwardAttrs{.conv = conv, .grad_shape = a.input_meta[0].shape});
    }
    if (a.needs(1)) {
      grads[1] = call1(op<"conv2d_backward_weight">(), {g, a.input(0)},
                       Conv2dBackwardAttrs{.conv = conv, .grad_shape = a.input_meta[1].shape});
    }
    if (a.needs(2)) grads[2] = sum(g, {0, 2, 3});
    return grads;
  };
  r.add(std::move(def));

  // dx = col2im(W^T dY), from (grad_out, weight).
  r.add(backward_def("conv2d_backward_input",
                     [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
                       const Conv2dAttrs& p = conv_params(a.get<Conv2dBackwardAttrs>().conv);
                       conv_kernels("conv2d_backward_input", out[0].device())
                           .backward_input(in[0].contiguous(), in[1].contiguous(), p, out[0]);
                     }));
  // dW = dY im2col(x)^T summed over the batch, from (grad_out, input).
  r.add(backward_def("conv2d_backward_weight",
                     [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
                       const Conv2dAttrs& p = conv_params(a.get<Conv2dBackwardAttrs>().conv);
                       conv_kernels("conv2d_backward_weight", out[0].device())
                           .backward_weight(in[0].contiguous(), in[1].contiguous(), p, out[0]);
                     }));
}

}  // namespace remat::ops

namespace remat {

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              std::vector<int64_t> stride, std::vector<int64_t> padding,
              std::vector<int64_t> dilation, int64_t groups) {
  const auto s = ops::pair_of("conv2d", "stride", stride);
  const auto p = ops::pair_of("conv2d", "padding", padding);
  const auto d = ops::pair_of("conv2d", "dilation", dilation);
  return ops::call1(ops::op<"conv2d">(), {x, weight, bias},
                    ops::Conv2dAttrs{.stride_h = s[0],
                                     .stride_w = s[1],
                                     .pad_h = p[0],
                                     .pad_w = p[1],
                                     .dilation_h = d[0],
                                     .dilation_w = d[1],
                                     .groups = groups});
}

}  // namespace remat
