// Losses, mean reduction. cross_entropy fuses log_softmax and the negative
// log-likelihood: its forward keeps each row's logsumexp as an auxiliary
// output, so backward rebuilds the softmax without a second pass over exp.
// mse_loss is composed of sub, mul and mean.
#include "kernels/loss.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

// logits [N, C, d1...] and targets [N, d1...] (int64).
void check_cross_entropy_operands(const char* name, const Tensor& logits, const Tensor& targets) {
  check_floating(name, logits);
  check_dtype(name, targets, kInt64, "targets");
  REMAT_CHECK_SHAPE(logits.dim() >= 2 && logits.shape()[1] > 0,
                    "{}: logits must be [N, C, d1...] with C > 0, got {}", name,
                    describe({logits, targets}));
  Shape expected = logits.shape();
  expected.erase(expected.begin() + 1);
  REMAT_CHECK_SHAPE(targets.shape() == expected,
                    "{}: targets must have shape {} for logits {}, got {}", name,
                    shape_str(expected), shape_str(logits.shape()), shape_str(targets.shape()));
}

const kernels::LossKernels& loss_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::loss_kernels, REMAT_CUDA_KERNELS(loss_kernels));
}

}  // namespace

void register_loss_ops(Registry& r) {
  OpDef def;
  def.name = "cross_entropy";
  def.attrs = attrs_type<CrossEntropyAttrs>();
  def.shape = [](const std::vector<Tensor>& in, const Attrs&) {
    check_cross_entropy_operands("cross_entropy", in[0], in[1]);
    return std::vector<TensorMeta>{{{}, in[0].dtype(), in[0].device()},
                                   {in[1].shape(), in[0].dtype(), in[0].device()}};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    loss_kernels("cross_entropy", out[0].device())
        .cross_entropy(in[0].contiguous(), in[1].contiguous(),
                       a.get<CrossEntropyAttrs>().ignore_index, out[0], out[1]);
  };
  def.visible_outputs = 1;  // output 1: per-row logsumexp, kept for backward
  def.save_inputs = {0, 1};
  def.save_outputs = {1};
  def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{call1(op<"cross_entropy_backward">(),
                                     {a.grad(), a.input(0), a.input(1), a.output(1)}, a.attrs),
                               Tensor()};
  };
  r.add(std::move(def));

  // (grad, logits, targets, lse) -> gradient of the logits.
  OpDef backward;
  backward.name = "cross_entropy_backward";
  backward.attrs = attrs_type<CrossEntropyAttrs>();
  backward.shape = [](const std::vector<Tensor>& in, const Attrs&) {
    const char* name = "cross_entropy_backward";
    check_cross_entropy_operands(name, in[1], in[2]);
    check_same_dtype(name, in[0], in[1]);
    check_same_dtype(name, in[3], in[1]);
    REMAT_CHECK_SHAPE(in[0].numel() == 1 && in[3].shape() == in[2].shape(),
                      "{}: expected a one-element grad and lse shaped like targets, got {}", name,
                      describe(in));
    return std::vector<TensorMeta>{TensorMeta::of(in[1])};
  };
  backward.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    loss_kernels("cross_entropy_backward", out[0].device())
        .cross_entropy_backward(in[0].contiguous(), in[1].contiguous(), in[2].contiguous(),
                                in[3].contiguous(), a.get<CrossEntropyAttrs>().ignore_index,
                                out[0]);
  };
  r.add(std::move(backward));
}

}  // namespace remat::ops

namespace remat {

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  return ops::call1(ops::op<"cross_entropy">(), {logits, targets},
                    ops::CrossEntropyAttrs{.ignore_index = ignore_index});
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  REMAT_CHECK_SHAPE(pred.shape() == target.shape(),
                    "mse_loss: pred and target must have the same shape, got {}",
                    ops::describe({pred, target}));
  ops::check_same_dtype("mse_loss", pred, target);
  Tensor diff = pred - target;
  return mean(diff * diff);
}

}  // namespace remat
