// Optimizer updates as registry ops, so each device's kernel is reached through
// one definition. They are not differentiable and have no outputs: they write
// their operands in place and bump those operands' versions, like
// batch_norm's running statistics.
#include "ops/optimizer.h"

#include <array>

#include "core/overlap.h"
#include "kernels/optimizer.h"
#include "ops/dispatch.h"

namespace remat::ops {
namespace {

const kernels::OptimizerKernels& optimizer_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::optimizer_kernels, REMAT_CUDA_KERNELS(optimizer_kernels));
}

// The operands adam_update writes, element by element, in place.
constexpr std::array<size_t, 3> kUpdated{0, 2, 3};

// inputs: param, grad, exp_avg, exp_avg_sq (one shape, dtype and device);
// attrs: lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, step.
// Updates param, exp_avg and exp_avg_sq in place (kernels/optimizer.h has
// the formulas).
OpDef adam_update_def() {
  OpDef def;
  def.name = "adam_update";
  def.visible_outputs = 0;
  // A widened copy of a bfloat16 parameter would take the update and be dropped.
  def.compute_reduced_in_float = false;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    REMAT_CHECK(in.size() == 4, "adam_update: expected (param, grad, exp_avg, exp_avg_sq), got {}",
                describe(in));
    const Tensor& param = in[0];
    REMAT_CHECK(is_floating(param.dtype()),
                "adam_update: parameters must be floating point, got {}",
                TensorMeta::of(param).str());
    for (size_t i = 1; i < in.size(); ++i) {
      REMAT_CHECK_SHAPE(in[i].defined() && in[i].shape() == param.shape(),
                        "adam_update: operands must share the parameter's shape ({})",
                        describe(in));
      check_same_dtype("adam_update", param, in[i]);
    }
    check_written_operands("adam_update", in, kUpdated);
    REMAT_CHECK(a.i("step") >= 1, "adam_update: step counts from 1, got {}", a.i("step"));
    return std::vector<TensorMeta>{};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>&) {
    const kernels::AdamStep step{.lr = a.f("lr"),
                                 .beta1 = a.f("beta1"),
                                 .beta2 = a.f("beta2"),
                                 .eps = a.f("eps"),
                                 .weight_decay = a.f("weight_decay"),
                                 .decoupled_weight_decay = a.b("decoupled_weight_decay"),
                                 .step = a.i("step")};
    // Any strides: the operands written in place cannot be contiguous copies.
    optimizer_kernels("adam_update", in[0].device()).adam_update(in[0], in[1], in[2], in[3], step);
    for (size_t updated : kUpdated) in[updated].bump_version();
  };
  return def;
}

}  // namespace

double vector_norm(const char* op, const Tensor& x, double p) {
  return optimizer_kernels(op, x.device()).vector_norm(x.contiguous(), p);
}

void register_optimizer_ops(Registry& r) { r.add(adam_update_def()); }

}  // namespace remat::ops
