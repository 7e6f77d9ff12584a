// 2-d pooling (NCHW): max (with an auxiliary indices output that backward
// scatters through), average, and adaptive average.
#include "kernels/pool.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

void check_input(const char* op, const Tensor& x) {
  check_floating(op, x);
  REMAT_CHECK_SHAPE(x.dim() == 4, "{}: expected a 4-d input [N, C, H, W], got {}", op,
                    TensorMeta::of(x).str());
}

// Validates the window against x and returns it.
const Pool2dAttrs& pool_params(const char* op, const Tensor& x, const Attrs& a) {
  const Pool2dAttrs& p = a.get<Pool2dAttrs>();
  REMAT_CHECK(p.kernel_h > 0 && p.kernel_w > 0,
              "{}: kernel must be 2 positive values, got [{}, {}]", op, p.kernel_h, p.kernel_w);
  REMAT_CHECK(p.stride_h > 0 && p.stride_w > 0,
              "{}: stride must be 2 positive values, got [{}, {}]", op, p.stride_h, p.stride_w);
  // Padding past half the kernel would make windows of padding alone.
  REMAT_CHECK(
      p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kernel_h && 2 * p.pad_w <= p.kernel_w,
      "{}: padding must be 2 values in [0, kernel/2] for kernel [{}, {}], got [{}, {}]", op,
      p.kernel_h, p.kernel_w, p.pad_h, p.pad_w);
  check_input(op, x);
  REMAT_CHECK_SHAPE(
      x.shape()[2] + 2 * p.pad_h >= p.kernel_h && x.shape()[3] + 2 * p.pad_w >= p.kernel_w,
      "{}: kernel [{}, {}] does not fit input {} padded by [{}, {}]", op, p.kernel_h, p.kernel_w,
      shape_str(x.shape()), p.pad_h, p.pad_w);
  return p;
}

Shape pooled_shape(const Tensor& x, const kernels::Pool2dParams& p) {
  const Shape& s = x.shape();
  return {s[0], s[1], (s[2] + 2 * p.pad_h - p.kernel_h) / p.stride_h + 1,
          (s[3] + 2 * p.pad_w - p.kernel_w) / p.stride_w + 1};
}

const kernels::PoolKernels& pool_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::pool_kernels, REMAT_CUDA_KERNELS(pool_kernels));
}

// An internal backward op: the gradient of the pooled input, shaped by the
// input_shape of its attributes A, from the operands `in` (gradient first).
template <typename A>
OpDef backward_def(const char* name, ForwardFn forward) {
  OpDef def;
  def.name = name;
  def.attrs = attrs_type<A>();
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{{a.get<A>().input_shape, in[0].dtype(), in[0].device()}};
  };
  def.forward = std::move(forward);
  return def;
}

}  // namespace

void register_pool_ops(Registry& r) {
  OpDef max_def;
  max_def.name = "max_pool2d";
  max_def.visible_outputs = 1;  // output 1, the int64 argmax positions, is kept for backward
  max_def.attrs = attrs_type<Pool2dAttrs>();
  max_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    Shape s = pooled_shape(in[0], pool_params("max_pool2d", in[0], a));
    return std::vector<TensorMeta>{{s, in[0].dtype(), in[0].device()}, {s, kInt64, in[0].device()}};
  };
  max_def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const Pool2dAttrs& p = pool_params("max_pool2d", in[0], a);
    pool_kernels("max_pool2d", out[0].device()).max_pool2d(in[0].contiguous(), p, out[0], out[1]);
  };
  max_def.save_outputs = {1};
  max_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{call1(op<"max_pool2d_backward">(), {a.grad(), a.output(1)},
                                     InputShapeAttrs{.input_shape = a.input_meta[0].shape})};
  };
  r.add(std::move(max_def));
  // Scatters (grad_out, indices) to the recorded maxima.
  r.add(backward_def<InputShapeAttrs>(
      "max_pool2d_backward",
      [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
        pool_kernels("max_pool2d_backward", out[0].device())
            .max_pool2d_backward(in[0].contiguous(), in[1].contiguous(), out[0]);
      }));

  OpDef avg_def;
  avg_def.name = "avg_pool2d";
  avg_def.attrs = attrs_type<Pool2dAttrs>();
  avg_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{
        {pooled_shape(in[0], pool_params("avg_pool2d", in[0], a)), in[0].dtype(), in[0].device()}};
  };
  avg_def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const Pool2dAttrs& p = pool_params("avg_pool2d", in[0], a);
    pool_kernels("avg_pool2d", out[0].device()).avg_pool2d(in[0].contiguous(), p, out[0]);
  };
  avg_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{call1(op<"avg_pool2d_backward">(), {a.grad()},
                                     Pool2dBackwardAttrs{.pool = a.attrs.get<Pool2dAttrs>(),
                                                         .input_shape = a.input_meta[0].shape})};
  };
  r.add(std::move(avg_def));
  // Spreads grad_out evenly over each window.
  r.add(backward_def<Pool2dBackwardAttrs>(
      "avg_pool2d_backward",
      [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
        pool_kernels("avg_pool2d_backward", out[0].device())
            .avg_pool2d_backward(in[0].contiguous(), a.get<Pool2dBackwardAttrs>().pool, out[0]);
      }));

  OpDef adaptive_def;
  adaptive_def.name = "adaptive_avg_pool2d";
  adaptive_def.attrs = attrs_type<AdaptivePool2dAttrs>();
  adaptive_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const Tensor& x = in[0];
    check_input("adaptive_avg_pool2d", x);
    const std::array<int64_t, 2>& size = a.get<AdaptivePool2dAttrs>().output_size;
    REMAT_CHECK(size[0] > 0 && size[1] > 0,
                "adaptive_avg_pool2d: output_size must be 2 positive values, got [{}]",
                fmt::join(size, ", "));
    REMAT_CHECK_SHAPE(x.shape()[2] > 0 && x.shape()[3] > 0,
                      "adaptive_avg_pool2d: input {} has an empty spatial dim",
                      TensorMeta::of(x).str());
    return std::vector<TensorMeta>{
        {{x.shape()[0], x.shape()[1], size[0], size[1]}, x.dtype(), x.device()}};
  };
  adaptive_def.forward = [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
    pool_kernels("adaptive_avg_pool2d", out[0].device())
        .adaptive_avg_pool2d(in[0].contiguous(), out[0]);
  };
  adaptive_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{call1(op<"adaptive_avg_pool2d_backward">(), {a.grad()},
                                     InputShapeAttrs{.input_shape = a.input_meta[0].shape})};
  };
  r.add(std::move(adaptive_def));
  // Spreads grad_out evenly over each bin.
  r.add(backward_def<InputShapeAttrs>(
      "adaptive_avg_pool2d_backward",
      [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
        pool_kernels("adaptive_avg_pool2d_backward", out[0].device())
            .adaptive_avg_pool2d_backward(in[0].contiguous(), out[0]);
      }));
}

}  // namespace remat::ops

namespace remat {

namespace {

ops::Pool2dAttrs window(const char* op, const std::vector<int64_t>& kernel,
                        const std::vector<int64_t>& stride, const std::vector<int64_t>& padding) {
  using ops::pair_of;
  const auto k = pair_of(op, "kernel", kernel);
  const auto s = stride.empty() ? k : pair_of(op, "stride", stride);
  const auto p = pair_of(op, "padding", padding);
  return {k[0], k[1], s[0], s[1], p[0], p[1]};
}

}  // namespace

Tensor max_pool2d(const Tensor& x, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                  std::vector<int64_t> padding) {
  return ops::call1(ops::op<"max_pool2d">(), {x}, window("max_pool2d", kernel, stride, padding));
}

Tensor avg_pool2d(const Tensor& x, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                  std::vector<int64_t> padding) {
  return ops::call1(ops::op<"avg_pool2d">(), {x}, window("avg_pool2d", kernel, stride, padding));
}

Tensor adaptive_avg_pool2d(const Tensor& x, std::vector<int64_t> output_size) {
  return ops::call1(
      ops::op<"adaptive_avg_pool2d">(), {x},
      ops::AdaptivePool2dAttrs{
          .output_size = ops::pair_of("adaptive_avg_pool2d", "output_size", output_size)});
}

}  // namespace remat
