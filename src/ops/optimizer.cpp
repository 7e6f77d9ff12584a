// Optimizer updates as registry ops, so each device's kernel is reached through
// one definition. They are not differentiable and have no outputs: they write
// their operands in place and bump those operands' versions, like
// batch_norm's running statistics.
#include "ops/optimizer.h"

#include <array>
#include <span>

#include "core/overlap.h"
#include "kernels/optimizer.h"
#include "ops/dispatch.h"

namespace remat::ops {
namespace {

const kernels::OptimizerKernels& optimizer_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::optimizer_kernels, REMAT_CUDA_KERNELS(optimizer_kernels));
}

// The operands adam_update and sgd_update (with momentum) write, element by
// element, in place.
constexpr std::array<size_t, 3> kAdamUpdated{0, 2, 3};
constexpr std::array<size_t, 2> kSgdUpdated{0, 2};

// An update's operands: a floating-point parameter first, the others of its
// shape and dtype, none overlapping one that is written.
void check_update_operands(const char* op, const std::vector<Tensor>& in,
                           std::span<const size_t> written) {
  const Tensor& param = in[0];
  REMAT_CHECK(is_floating(param.dtype()), "{}: parameters must be floating point, got {}", op,
              TensorMeta::of(param).str());
  for (size_t i = 1; i < in.size(); ++i) {
    REMAT_CHECK_SHAPE(in[i].defined() && in[i].shape() == param.shape(),
                      "{}: operands must share the parameter's shape ({})", op, describe(in));
    check_same_dtype(op, param, in[i]);
  }
  check_written_operands(op, in, written);
}

// inputs: param, grad, exp_avg, exp_avg_sq (one shape, dtype and device);
// attrs AdamUpdateAttrs (the kernel's AdamStep: lr, betas, eps, weight decay
// and its kind, step).
// Updates param, exp_avg and exp_avg_sq in place (kernels/optimizer.h has
// the formulas).
OpDef adam_update_def() {
  OpDef def;
  def.name = "adam_update";
  def.visible_outputs = 0;
  def.attrs = attrs_type<AdamUpdateAttrs>();
  // A widened copy of a bfloat16 parameter would take the update and be dropped.
  def.compute_reduced_in_float = false;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    REMAT_CHECK(in.size() == 4, "adam_update: expected (param, grad, exp_avg, exp_avg_sq), got {}",
                describe(in));
    check_update_operands("adam_update", in, kAdamUpdated);
    const int64_t step = a.get<AdamUpdateAttrs>().step;
    REMAT_CHECK(step >= 1, "adam_update: step counts from 1, got {}", step);
    return std::vector<TensorMeta>{};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>&) {
    // Any strides: the operands written in place cannot be contiguous copies.
    optimizer_kernels("adam_update", in[0].device())
        .adam_update(in[0], in[1], in[2], in[3], a.get<AdamUpdateAttrs>());
    for (size_t updated : kAdamUpdated) in[updated].bump_version();
  };
  return def;
}

// inputs: param, grad and, with momentum, momentum_buffer (one shape, dtype
// and device); attrs SgdUpdateAttrs (the kernel's SgdStep). Updates param and
// the buffer in place (kernels/optimizer.h has the formulas).
OpDef sgd_update_def() {
  OpDef def;
  def.name = "sgd_update";
  def.visible_outputs = 0;
  def.attrs = attrs_type<SgdUpdateAttrs>();
  def.compute_reduced_in_float = false;  // as adam_update
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const bool momentum = a.get<SgdUpdateAttrs>().momentum != 0;
    REMAT_CHECK(in.size() == (momentum ? 3u : 2u), "sgd_update: expected (param, grad{}), got {}",
                momentum ? ", momentum_buffer" : "", describe(in));
    check_update_operands("sgd_update", in, std::span(kSgdUpdated).first(momentum ? 2 : 1));
    return std::vector<TensorMeta>{};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>&) {
    const bool momentum = in.size() == 3;
    optimizer_kernels("sgd_update", in[0].device())
        .sgd_update(in[0], in[1], momentum ? in[2] : Tensor(), a.get<SgdUpdateAttrs>());
    in[0].bump_version();
    if (momentum) in[2].bump_version();
  };
  return def;
}

}  // namespace

double vector_norm(const char* op, const Tensor& x, double p) {
  return optimizer_kernels(op, x.device()).vector_norm(x.contiguous(), p);
}

void register_optimizer_ops(Registry& r) {
  r.add(adam_update_def());
  r.add(sgd_update_def());
}

}  // namespace remat::ops
