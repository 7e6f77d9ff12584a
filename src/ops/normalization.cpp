// Normalisation: layer_norm and batch_norm. Each is one fused op whose
// auxiliary outputs (layer_norm: per-row mean and rstd; batch_norm: per-channel
// mean and invstd) are kept for its backward, an internal *_backward op that
// returns dx, dweight and dbias.
//
// Optional operands are left out of the inputs rather than passed undefined,
// so the tape never holds an undefined operand (the conv2d convention). The
// weight is not optional: the op saves it for backward, so the public
// functions stand in a ones weight (which needs no gradient) when the caller
// gives none.
#include <algorithm>

#include "kernels/cpu/normalization.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

// Statistics of bfloat16/float16 inputs stay in float32, what the CPU kernels
// compute in; rounding them to 16 bits would cost backward its precision.
DType stat_dtype(DType x) { return is_reduced_float(x) ? kFloat32 : x; }

// The backward kernels compute only the gradients asked for: "output_mask"
// holds one flag per gradient (dx, dweight, dbias), and a gradient not asked
// for is an empty [0] output.
TensorMeta if_asked(int64_t asked, TensorMeta meta) {
  if (!asked) meta.shape = {0};
  return meta;
}
Tensor if_asked(int64_t asked, const Tensor& t) { return asked ? t : Tensor(); }
std::vector<int64_t> output_mask(const char* op, const Attrs& a) {
  const std::vector<int64_t>& mask = a.ints("output_mask");
  REMAT_CHECK(mask.size() == 3, "{}: output_mask needs 3 flags (dx, dweight, dbias), got {}", op,
              mask.size());
  return mask;
}

void check_affine(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  REMAT_CHECK(weight.defined(),
              "{}: the op needs a weight (the public {} stands in ones when none is given)", op,
              op);
  check_same_dtype(op, x, weight);
  if (bias.defined()) {
    check_same_dtype(op, weight, bias);
    REMAT_CHECK_SHAPE(bias.shape() == weight.shape(), "{}: bias {} must have weight's shape {}", op,
                      shape_str(bias.shape()), shape_str(weight.shape()));
  }
}

// layer_norm's operands: x, weight[, bias].
struct LayerNormOperands {
  Tensor x, weight, bias;
  explicit LayerNormOperands(const std::vector<Tensor>& in) {
    REMAT_CHECK(in.size() == 2 || in.size() == 3,
                "layer_norm: expected (input, weight[, bias]), got {} operands", in.size());
    x = in[0];
    weight = in[1];
    if (in.size() == 3) bias = in[2];
  }
};

// batch_norm's operands: x, weight[, running_mean, running_var][, bias]. The
// count tells which are there: the running statistics come as a pair, so an
// odd count means a bias, which is last.
struct BatchNormOperands {
  Tensor x, weight, running_mean, running_var, bias;
  explicit BatchNormOperands(const std::vector<Tensor>& in) {
    REMAT_CHECK(in.size() >= 2 && in.size() <= 5,
                "batch_norm: expected (input, weight[, running_mean, running_var][, bias]), got "
                "{} operands",
                in.size());
    x = in[0];
    weight = in[1];
    if (in.size() >= 4) {
      running_mean = in[2];
      running_var = in[3];
    }
    if (has_bias(in.size())) bias = in.back();
  }
  static bool has_bias(size_t operands) { return operands % 2 == 1; }
};

void check_batch_norm_input(const Tensor& x) {
  check_floating("batch_norm", x);
  REMAT_CHECK_SHAPE(x.dim() >= 2, "batch_norm: input must be [N, C, ...], got {}",
                    TensorMeta::of(x).str());
}

// Values per channel: every dim but the channel dim.
int64_t values_per_channel(const Tensor& x) {
  Shape others = x.shape();
  others.erase(others.begin() + 1);
  return numel_of(others);
}

// inputs: x, weight[, bias]; attrs: eps. Normalises over the trailing dims of
// weight's shape (PyTorch's normalized_shape = weight.shape).
OpDef layer_norm_def() {
  OpDef def;
  def.name = "layer_norm";
  def.visible_outputs = 1;
  def.shape = [](const std::vector<Tensor>& in, const Attrs&) {
    const LayerNormOperands operands(in);
    const Tensor &x = operands.x, &w = operands.weight, &b = operands.bias;
    check_floating("layer_norm", x);
    check_affine("layer_norm", x, w, b);
    const int64_t axis = x.dim() - w.dim();
    REMAT_CHECK_SHAPE(w.dim() >= 1 && axis >= 0 &&
                          std::equal(w.shape().begin(), w.shape().end(), x.shape().begin() + axis),
                      "layer_norm: weight's shape {} must equal the trailing dims of the input {}",
                      shape_str(w.shape()), shape_str(x.shape()));
    REMAT_CHECK_SHAPE(w.numel() > 0, "layer_norm: empty normalized shape {} (input {})",
                      shape_str(w.shape()), shape_str(x.shape()));
    Shape stats = x.shape();
    std::fill(stats.begin() + axis, stats.end(), 1);
    const TensorMeta stat{stats, stat_dtype(x.dtype()), x.device()};
    return std::vector<TensorMeta>{TensorMeta::of(x), stat, stat};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const LayerNormOperands operands(in);
    on_device("layer_norm", operands.x.device(), [&] {
      kernels::cpu::layer_norm(operands.x, operands.weight, operands.bias, a.f("eps"), out[0],
                               out[1], out[2]);
    });
  };
  def.save_inputs = {0, 1};
  def.save_outputs = {1, 2};
  def.backward = [](const BackwardArgs& a) {
    const bool has_bias = a.input_meta.size() == 3;
    const std::vector<int64_t> mask{a.needs(0), a.needs(1), has_bias && a.needs(2)};
    std::vector<Tensor> g =
        call(op("layer_norm_backward"),
             {a.grad(), a.input(0), a.input(1), a.output(1), a.output(2)}, {{"output_mask", mask}});
    std::vector<Tensor> grads{if_asked(mask[0], g[0]), if_asked(mask[1], g[1])};
    if (has_bias) grads.push_back(if_asked(mask[2], g[2]));
    return grads;
  };
  return def;
}

// inputs: grad, x, weight, mean, rstd; attrs: output_mask. Outputs dx,
// dweight, dbias.
OpDef layer_norm_backward_def() {
  OpDef def;
  def.name = "layer_norm_backward";
  def.visible_outputs = -1;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    REMAT_CHECK_SHAPE(in[0].shape() == in[1].shape(),
                      "layer_norm_backward: gradient {} does not match the input {}",
                      shape_str(in[0].shape()), shape_str(in[1].shape()));
    const std::vector<int64_t> mask = output_mask("layer_norm_backward", a);
    return std::vector<TensorMeta>{if_asked(mask[0], TensorMeta::of(in[1])),
                                   if_asked(mask[1], TensorMeta::of(in[2])),
                                   if_asked(mask[2], TensorMeta::of(in[2]))};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const std::vector<int64_t> mask = output_mask("layer_norm_backward", a);
    on_device("layer_norm_backward", in[1].device(), [&] {
      kernels::cpu::layer_norm_backward(in[0], in[1], in[2], in[3], in[4],
                                        if_asked(mask[0], out[0]), if_asked(mask[1], out[1]),
                                        if_asked(mask[2], out[2]));
    });
  };
  return def;
}

// inputs: x [N, C, ...], weight[, running_mean, running_var][, bias]; attrs:
// training, momentum, eps, update_running_stats.
//
// Training normalises with the batch statistics (biased variance) and, when
// the running statistics are given and update_running_stats is on (the
// default), moves them in place: running = (1 - momentum) * running +
// momentum * batch statistic, with the unbiased variance for running_var.
// That write is a side effect outside the tape, so it hangs on an attribute:
// checkpoint replay runs the forward again with update_running_stats off and
// the statistics move once per step. Eval normalises with the running
// statistics. Either way the statistics used come out as save_mean and
// save_invstd, which backward reads; the running statistics are never saved
// (the next step's update would trip the saved-version check).
OpDef batch_norm_def() {
  OpDef def;
  def.name = "batch_norm";
  def.visible_outputs = 1;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const BatchNormOperands operands(in);
    const Tensor &x = operands.x, &w = operands.weight, &b = operands.bias;
    const Tensor &running_mean = operands.running_mean, &running_var = operands.running_var;
    check_batch_norm_input(x);
    check_affine("batch_norm", x, w, b);
    const int64_t channels = x.shape()[1];
    REMAT_CHECK_SHAPE(w.shape() == Shape{channels},
                      "batch_norm: weight {} must be [{}] for the channels of input {}",
                      shape_str(w.shape()), channels, shape_str(x.shape()));
    REMAT_CHECK(running_mean.defined() == running_var.defined(),
                "batch_norm: running_mean and running_var must be given together ({})",
                describe(in));
    const bool training = a.b("training");
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
    const TensorMeta stat{{channels}, stats, x.device()};
    return std::vector<TensorMeta>{TensorMeta::of(x), stat, stat};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const BatchNormOperands operands(in);
    const Tensor &x = operands.x, &running_mean = operands.running_mean,
                 &running_var = operands.running_var;
    const bool training = a.b("training");
    const bool update = training && running_mean.defined() &&
                        (!a.has("update_running_stats") || a.b("update_running_stats"));
    on_device("batch_norm", x.device(), [&] {
      if (training) {
        kernels::cpu::batch_norm_stats(x, a.f("eps"), out[1], out[2],
                                       update ? running_mean : Tensor(),
                                       update ? running_var : Tensor(), a.f("momentum"));
      } else {
        kernels::cpu::batch_norm_running_stats(running_mean, running_var, a.f("eps"), out[1],
                                               out[2]);
      }
      kernels::cpu::batch_norm_apply(x, out[1], out[2], operands.weight, operands.bias, out[0]);
    });
    if (update) {
      running_mean.bump_version();
      running_var.bump_version();
    }
  };
  def.save_inputs = {0, 1};
  def.save_outputs = {1, 2};
  def.backward = [](const BackwardArgs& a) {
    const size_t operands = a.input_meta.size();
    const bool has_bias = BatchNormOperands::has_bias(operands);
    const std::vector<int64_t> mask{a.needs(0), a.needs(1),
                                    has_bias && a.needs(static_cast<int>(operands) - 1)};
    std::vector<Tensor> g = call(op("batch_norm_backward"),
                                 {a.grad(), a.input(0), a.input(1), a.output(1), a.output(2)},
                                 {{"training", a.attrs.b("training")}, {"output_mask", mask}});
    // The running statistics (never requiring grad) get none.
    std::vector<Tensor> grads(operands);
    grads[0] = if_asked(mask[0], g[0]);
    grads[1] = if_asked(mask[1], g[1]);
    if (has_bias) grads.back() = if_asked(mask[2], g[2]);
    return grads;
  };
  return def;
}

// inputs: grad, x, weight, mean, invstd (the statistics batch_norm used);
// attrs: training (whether they were batch statistics, through which dx
// flows too), output_mask. Outputs dx, dweight, dbias.
OpDef batch_norm_backward_def() {
  OpDef def;
  def.name = "batch_norm_backward";
  def.visible_outputs = -1;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    REMAT_CHECK_SHAPE(in[0].shape() == in[1].shape(),
                      "batch_norm_backward: gradient {} does not match the input {}",
                      shape_str(in[0].shape()), shape_str(in[1].shape()));
    const std::vector<int64_t> mask = output_mask("batch_norm_backward", a);
    return std::vector<TensorMeta>{if_asked(mask[0], TensorMeta::of(in[1])),
                                   if_asked(mask[1], TensorMeta::of(in[2])),
                                   if_asked(mask[2], TensorMeta::of(in[2]))};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const std::vector<int64_t> mask = output_mask("batch_norm_backward", a);
    on_device("batch_norm_backward", in[1].device(), [&] {
      kernels::cpu::batch_norm_backward(in[0], in[1], in[2], in[3], in[4], a.b("training"),
                                        if_asked(mask[0], out[0]), if_asked(mask[1], out[1]),
                                        if_asked(mask[2], out[2]));
    });
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

// Without weight, the normalised dims are those of bias's shape, or the last
// dim when bias is undefined too.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  Tensor w = weight;
  if (!w.defined()) {
    REMAT_CHECK_SHAPE(x.dim() >= 1, "layer_norm: input must have at least one dim, got {}",
                      TensorMeta::of(x).str());
    w = ones(bias.defined() ? bias.shape() : Shape{x.shape().back()}, x.dtype(), x.device());
  }
  std::vector<Tensor> inputs{x, w};
  if (bias.defined()) inputs.push_back(bias);
  return ops::call1(ops::op("layer_norm"), inputs, {{"eps", eps}});
}

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps) {
  Tensor w = weight;
  if (!w.defined()) {
    ops::check_batch_norm_input(x);
    w = ones({x.shape()[1]}, x.dtype(), x.device());
  }
  REMAT_CHECK(running_mean.defined() == running_var.defined(),
              "batch_norm: running_mean and running_var must be given together (got {})",
              ops::describe({running_mean, running_var}));
  std::vector<Tensor> inputs{x, w};
  if (running_mean.defined()) inputs.insert(inputs.end(), {running_mean, running_var});
  if (bias.defined()) inputs.push_back(bias);
  return ops::call1(ops::op("batch_norm"), inputs,
                    {{"training", training},
                     {"momentum", momentum},
                     {"eps", eps},
                     {"update_running_stats", training}});
}

}  // namespace remat
