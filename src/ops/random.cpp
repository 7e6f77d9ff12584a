// Dropout: a counter-based Philox mask that is never stored. call() reserves
// numel numbers of the default stream and records (seed, offset) with the
// attributes (Attrs::philox); backward regenerates the same mask from them,
// so dropout saves no tensor and a replayed forward draws the same mask.
#include "kernels/dropout.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

void check_probability(double p) {
  REMAT_CHECK(p >= 0.0 && p <= 1.0, "dropout: p must be in [0, 1], got {}", p);
}

// The forward (on the input) and the backward (on the gradient) apply the
// same mask and scale.
OpDef mask_def(const char* name, BackwardFn backward) {
  OpDef def;
  def.name = name;
  def.attrs = attrs_type<DropoutAttrs>();
  def.shape = [name](const std::vector<Tensor>& in, const Attrs& a) {
    check_floating(name, in[0]);
    check_probability(a.get<DropoutAttrs>().p);
    REMAT_CHECK(a.philox.has_value(), "{}: no random numbers reserved for the mask", name);
    return std::vector<TensorMeta>{TensorMeta::of(in[0])};
  };
  def.forward = [name](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const double p = a.get<DropoutAttrs>().p;
    const PhiloxState philox = *a.philox;
    // The mask is indexed by row-major position, whatever x's strides.
    const Tensor x = in[0].contiguous();
    kernels_for(name, out[0].device(), kernels::cpu::dropout_kernels,
                REMAT_CUDA_KERNELS(dropout_kernels))
        .apply_mask(x, p, kernels::dropout_keep_scale(p), philox.seed, philox.offset, out[0]);
  };
  def.backward = std::move(backward);
  return def;
}

}  // namespace

void register_random_ops(Registry& r) {
  OpDef dropout = mask_def("dropout", [](const BackwardArgs& a) {
    // The same attributes, the same numbers: the same mask.
    return std::vector<Tensor>{call1(op<"dropout_backward">(), {a.grad()}, a.attrs)};
  });
  dropout.random_count = [](const std::vector<Tensor>& in, const Attrs&) { return in[0].numel(); };
  r.add(std::move(dropout));
  r.add(mask_def("dropout_backward", nullptr));
}

}  // namespace remat::ops

namespace remat {

Tensor dropout(const Tensor& x, double p, bool training) {
  ops::check_probability(p);
  if (!training || p == 0.0) return x;
  return ops::call1(ops::op<"dropout">(), {x}, ops::DropoutAttrs{.p = p});
}

}  // namespace remat
