// Normalisation: layer_norm and batch_norm. Each is one fused op whose
// auxiliary outputs (layer_norm: per-row mean and rstd; batch_norm: per-channel
// mean and invstd) are kept for its backward, an internal *_backward op that
// returns dx, dweight and dbias.
//
// The operands sit in fixed slots mirroring the public signatures, and the
// optional ones (weight, bias, running statistics) may be undefined: the
// kernels then skip the scale or the shift, and backward returns no gradient
// for them.
#include <algorithm>
#include <array>

#include "core/overlap.h"
#include "kernels/normalization.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

const kernels::NormalizationKernels& normalization_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::normalization_kernels,
                     REMAT_CUDA_KERNELS(normalization_kernels));
}

// Statistics of bfloat16/float16 inputs stay in float32, what the CPU kernels
// compute in; rounding them to 16 bits would cost backward its precision.
DType stat_dtype(DType x) { return is_reduced_float(x) ? kFloat32 : x; }

// The backward kernels compute only the gradients their GradMask asks for
// (dx, dweight, dbias); a gradient not asked for is an empty [0] output.
TensorMeta if_asked(bool asked, TensorMeta meta) {
  if (!asked) meta.shape = {0};
  return meta;
}
Tensor if_asked(bool asked, const Tensor& t) { return asked ? t : Tensor(); }
std::vector<TensorMeta> masked_metas(const GradMask& mask, const TensorMeta& x,
                                     const TensorMeta& affine) {
  return {if_asked(mask.input, x), if_asked(mask.weight, affine), if_asked(mask.bias, affine)};
}

// A defined affine operand (weight or bias) must have x's dtype and `shape`.
void check_affine(const char* op, const Tensor& x, const Tensor& t, const char* role,
                  const Shape& shape) {
  if (!t.defined()) return;
  check_same_dtype(op, x, t);
  REMAT_CHECK_SHAPE(t.shape() == shape, "{}: {} {} must be {} for input {}", op, role,
                    shape_str(t.shape()), shape_str(shape), shape_str(x.shape()));
}

// The trailing dims layer_norm normalises: weight's rank, else bias's, else
// the normalized_ndim attribute, which must agree with them when given too.
int64_t layer_norm_ndim(const Tensor& x, const Tensor& w, const Tensor& b,
                        const LayerNormAttrs& a) {
  const Tensor& affine = w.defined() ? w : b;
  const char* role = w.defined() ? "weight" : "bias";
  const bool has_attr = a.normalized_ndim != 0;
  REMAT_CHECK(affine.defined() || has_attr,
              "layer_norm: without weight and bias the normalized_ndim attribute must say how "
              "many trailing dims to normalise (input {})",
              TensorMeta::of(x).str());
  const int64_t ndim = affine.defined() ? affine.dim() : a.normalized_ndim;
  REMAT_CHECK_SHAPE(!affine.defined() || !has_attr || a.normalized_ndim == ndim,
                    "layer_norm: normalized_ndim={} disagrees with {} {}", a.normalized_ndim, role,
                    shape_str(affine.shape()));
  REMAT_CHECK_SHAPE(
      ndim >= 1 && ndim <= x.dim(), "layer_norm: cannot normalise the last {} dims{} of input {}",
      ndim,
      affine.defined() ? fmt::format(" ({} {})", role, shape_str(affine.shape())) : std::string(),
      shape_str(x.shape()));
  return ndim;
}

Shape trailing_dims(const Tensor& x, int64_t ndim) {
  return Shape(x.shape().end() - ndim, x.shape().end());
}

// Values per channel: every dim but the channel dim.
int64_t values_per_channel(const Tensor& x) {
  Shape others = x.shape();
  others.erase(others.begin() + 1);
  return numel_of(others);
}

// inputs: x, weight, bias (either may be undefined); attrs LayerNormAttrs:
// eps, and normalized_ndim (needed only without weight and bias). Normalises
// over the trailing dims of weight's shape (PyTorch's normalized_shape =
// weight.shape), else of bias's, else the last normalized_ndim dims.
OpDef layer_norm_def() {
  OpDef def;
  def.name = "layer_norm";
  def.attrs = attrs_type<LayerNormAttrs>();
  def.visible_outputs = 1;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    REMAT_CHECK(in.size() == 3,
                "layer_norm: expected (input, weight, bias), weight and bias possibly undefined, "
                "got {} operands",
                in.size());
    const Tensor &x = in[0], &w = in[1], &b = in[2];
    check_floating("layer_norm", x);
    const int64_t ndim = layer_norm_ndim(x, w, b, a.get<LayerNormAttrs>());
    const Shape normalized = trailing_dims(x, ndim);
    check_affine("layer_norm", x, w, "weight", normalized);
    check_affine("layer_norm", x, b, "bias", normalized);
    REMAT_CHECK_SHAPE(numel_of(normalized) > 0, "layer_norm: empty normalized shape {} (input {})",
                      shape_str(normalized), shape_str(x.shape()));
    Shape stats = x.shape();
    std::fill(stats.end() - ndim, stats.end(), 1);
    const TensorMeta stat{stats, stat_dtype(x.dtype()), x.device()};
    return std::vector<TensorMeta>{TensorMeta::of(x), stat, stat};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const auto& attrs = a.get<LayerNormAttrs>();
    const int64_t ndim = layer_norm_ndim(in[0], in[1], in[2], attrs);
    normalization_kernels("layer_norm", in[0].device())
        .layer_norm(in[0].contiguous(), contiguous_operand(in[1]), contiguous_operand(in[2]), ndim,
                    attrs.eps, out[0], out[1], out[2]);
  };
  def.save_inputs = {0, 1};
  def.save_outputs = {1, 2};
  def.compute_reduced_in_float = false;  // the kernel takes 16-bit operands
  def.backward = [](const BackwardArgs& a) {
    // The rank of weight, else of bias (not saved: its metadata has it), else
    // the attribute; the shape rule made those given agree and let no call
    // through without one of them.
    const Tensor& w = a.input(1);
    int64_t ndim = w.defined() ? w.dim() : static_cast<int64_t>(a.input_meta[2].shape.size());
    if (const int64_t given = a.attrs.get<LayerNormAttrs>().normalized_ndim; given != 0) {
      ndim = given;
    }
    const GradMask mask{a.needs(0), a.needs(1), a.needs(2)};
    std::vector<Tensor> g =
        call(op<"layer_norm_backward">(), {a.grad(), a.input(0), w, a.output(1), a.output(2)},
             LayerNormBackwardAttrs{.normalized_ndim = ndim, .mask = mask});
    return std::vector<Tensor>{if_asked(mask.input, g[0]), if_asked(mask.weight, g[1]),
                               if_asked(mask.bias, g[2])};
  };
  return def;
}

// inputs: grad, x, weight (possibly undefined), mean, rstd; attrs
// LayerNormBackwardAttrs. Outputs dx, dweight, dbias.
OpDef layer_norm_backward_def() {
  OpDef def;
  def.name = "layer_norm_backward";
  def.attrs = attrs_type<LayerNormBackwardAttrs>();
  def.compute_reduced_in_float = false;
  def.visible_outputs = -1;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const Tensor &g = in[0], &x = in[1];
    REMAT_CHECK_SHAPE(g.shape() == x.shape(),
                      "layer_norm_backward: gradient {} does not match the input {}",
                      shape_str(g.shape()), shape_str(x.shape()));
    const auto& attrs = a.get<LayerNormBackwardAttrs>();
    REMAT_CHECK_SHAPE(attrs.normalized_ndim >= 1 && attrs.normalized_ndim <= x.dim(),
                      "layer_norm_backward: cannot normalise the last {} dims of input {}",
                      attrs.normalized_ndim, shape_str(x.shape()));
    const TensorMeta affine{trailing_dims(x, attrs.normalized_ndim), x.dtype(), x.device()};
    return masked_metas(attrs.mask, TensorMeta::of(x), affine);
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const auto& attrs = a.get<LayerNormBackwardAttrs>();
    normalization_kernels("layer_norm_backward", in[1].device())
        .layer_norm_backward(
            in[0].contiguous(), in[1].contiguous(), contiguous_operand(in[2]), in[3].contiguous(),
            in[4].contiguous(), attrs.normalized_ndim, if_asked(attrs.mask.input, out[0]),
            if_asked(attrs.mask.weight, out[1]), if_asked(attrs.mask.bias, out[2]));
  };
  return def;
}

// Whether a batch_norm call moves its running statistics, in place.
bool updates_running_stats(const std::vector<Tensor>& in, const BatchNormAttrs& a) {
  return a.training && in[1].defined() && a.update_running_stats;
}

// inputs: x [N, C, ...], running_mean, running_var, weight, bias (the last
// four possibly undefined, the running statistics both or neither); attrs
// BatchNormAttrs: training, momentum, eps, update_running_stats.
//
// Training normalises with the batch statistics (biased variance) and, when
// the running statistics are given and update_running_stats is on (the
// default), moves them in place: running = (1 - momentum) * running +
// momentum * batch statistic, with the unbiased variance for running_var.
// That write is a side effect outside the tape, so it hangs on an attribute:
// checkpoint replay runs the forward again with update_running_stats off
// (OpDef::for_replay) and
// the statistics move once per step. Eval normalises with the running
// statistics. Either way the statistics used come out as save_mean and
// save_invstd, which backward reads; the running statistics are never saved
// (the next step's update would trip the saved-version check).
OpDef batch_norm_def() {
  OpDef def;
  def.name = "batch_norm";
  def.attrs = attrs_type<BatchNormAttrs>();
  def.visible_outputs = 1;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    REMAT_CHECK(in.size() == 5,
                "batch_norm: expected (input, running_mean, running_var, weight, bias), all but "
                "the input possibly undefined, got {} operands",
                in.size());
    const Tensor &x = in[0], &running_mean = in[1], &running_var = in[2];
    check_floating("batch_norm", x);
    REMAT_CHECK_SHAPE(x.dim() >= 2, "batch_norm: input must be [N, C, ...], got {}",
                      TensorMeta::of(x).str());
    const int64_t channels = x.shape()[1];
    check_affine("batch_norm", x, in[3], "weight", {channels});
    check_affine("batch_norm", x, in[4], "bias", {channels});
    REMAT_CHECK(running_mean.defined() == running_var.defined(),
                "batch_norm: running_mean and running_var must be given together ({})",
                describe(in));
    const auto& attrs = a.get<BatchNormAttrs>();
    const bool training = attrs.training;
    REMAT_CHECK(training || running_mean.defined(),
                "batch_norm: eval mode normalises with running_mean and running_var; give them "
                "({})",
                describe(in));
    const DType stats = stat_dtype(x.dtype());
    for (const auto& [t, role] :
         {std::pair{&running_mean, "running_mean"}, std::pair{&running_var, "running_var"}}) {
      if (!t->defined()) continue;
      REMAT_CHECK_SHAPE(t->shape() == Shape{channels},
                        "batch_norm: {} {} must be [{}] for the channels of input {}", role,
                        shape_str(t->shape()), channels, shape_str(x.shape()));
      REMAT_CHECK(t->dtype() == stats, "batch_norm: {} must be {} for a {} input, got {}", role,
                  stats, x.dtype(), TensorMeta::of(*t).str());
      REMAT_CHECK(!t->requires_grad(),
                  "batch_norm: {} is a statistic, not a parameter: it must not require grad", role);
    }
    // The unbiased variance of the running update divides by count - 1.
    REMAT_CHECK_SHAPE(!training || values_per_channel(x) > 1,
                      "batch_norm: training needs more than one value per channel, got input {}",
                      shape_str(x.shape()));
    if (updates_running_stats(in, attrs)) {
      check_written_operands("batch_norm", in, std::array<size_t, 2>{1, 2});
    }
    const TensorMeta stat{{channels}, stats, x.device()};
    return std::vector<TensorMeta>{TensorMeta::of(x), stat, stat};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const Tensor &running_mean = in[1], &running_var = in[2];
    const auto& attrs = a.get<BatchNormAttrs>();
    const bool update = updates_running_stats(in, attrs);
    const kernels::NormalizationKernels& k = normalization_kernels("batch_norm", in[0].device());
    // The running statistics go as they are: an update must land in the caller's tensors.
    const Tensor x = in[0].contiguous();
    if (attrs.training) {
      k.batch_norm_stats(x, attrs.eps, out[1], out[2], update ? running_mean : Tensor(),
                         update ? running_var : Tensor(), attrs.momentum);
    } else {
      k.batch_norm_running_stats(running_mean, running_var, attrs.eps, out[1], out[2]);
    }
    k.batch_norm_apply(x, out[1], out[2], contiguous_operand(in[3]), contiguous_operand(in[4]),
                       out[0]);
    if (update) {
      running_mean.bump_version();
      running_var.bump_version();
    }
  };
  def.save_inputs = {0, 3};
  def.save_outputs = {1, 2};
  def.for_replay = [](Attrs& a) { a.get<BatchNormAttrs>().update_running_stats = false; };
  def.replay_ignores_input = [](const Attrs& a, size_t index) {
    return a.get<BatchNormAttrs>().training && (index == 1 || index == 2);
  };
  def.backward = [](const BackwardArgs& a) {
    const GradMask mask{a.needs(0), a.needs(3), a.needs(4)};
    std::vector<Tensor> g = call(
        op<"batch_norm_backward">(), {a.grad(), a.input(0), a.input(3), a.output(1), a.output(2)},
        BatchNormBackwardAttrs{.training = a.attrs.get<BatchNormAttrs>().training, .mask = mask});
    // The running statistics (never requiring grad) get none.
    return std::vector<Tensor>{if_asked(mask.input, g[0]), Tensor(), Tensor(),
                               if_asked(mask.weight, g[1]), if_asked(mask.bias, g[2])};
  };
  return def;
}

// inputs: grad, x, weight (possibly undefined), mean, invstd (the statistics
// batch_norm used); attrs BatchNormBackwardAttrs: training (whether they were
// batch statistics, through which dx flows too) and the mask. Outputs dx,
// dweight, dbias.
OpDef batch_norm_backward_def() {
  OpDef def;
  def.name = "batch_norm_backward";
  def.attrs = attrs_type<BatchNormBackwardAttrs>();
  def.visible_outputs = -1;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const Tensor &g = in[0], &x = in[1];
    REMAT_CHECK_SHAPE(g.shape() == x.shape(),
                      "batch_norm_backward: gradient {} does not match the input {}",
                      shape_str(g.shape()), shape_str(x.shape()));
    REMAT_CHECK_SHAPE(x.dim() >= 2, "batch_norm_backward: input must be [N, C, ...], got {}",
                      TensorMeta::of(x).str());
    const TensorMeta affine{{x.shape()[1]}, x.dtype(), x.device()};
    return masked_metas(a.get<BatchNormBackwardAttrs>().mask, TensorMeta::of(x), affine);
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const auto& attrs = a.get<BatchNormBackwardAttrs>();
    normalization_kernels("batch_norm_backward", in[1].device())
        .batch_norm_backward(
            in[0].contiguous(), in[1].contiguous(), contiguous_operand(in[2]), in[3].contiguous(),
            in[4].contiguous(), attrs.training, if_asked(attrs.mask.input, out[0]),
            if_asked(attrs.mask.weight, out[1]), if_asked(attrs.mask.bias, out[2]));
  };
  return def;
}

}  // namespace

void register_normalization_ops(Registry& r) {
  r.add(layer_norm_def());
  r.add(layer_norm_backward_def());
  r.add(batch_norm_def());
  r.add(batch_norm_backward_def());
}

}  // namespace remat::ops

namespace remat {

// Without weight and bias, the last dim is normalised (PyTorch has no such
// default: its layer_norm always takes normalized_shape).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const int64_t ndim = weight.defined() || bias.defined() ? 0 : 1;
  return ops::call1(ops::op<"layer_norm">(), {x, weight, bias},
                    ops::LayerNormAttrs{.eps = eps, .normalized_ndim = ndim});
}

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps) {
  return ops::call1(ops::op<"batch_norm">(), {x, running_mean, running_var, weight, bias},
                    ops::BatchNormAttrs{.training = training,
                                        .momentum = momentum,
                                        .eps = eps,
                                        .update_running_stats = training});
}

}  // namespace remat
