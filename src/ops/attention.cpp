// Scaled dot-product attention, composed of matmul, mul, softmax and the
// causal_mask op, so a checkpoint policy can keep the matmul outputs and
// recompute the rest.
#include <cmath>
#include <limits>

#include "kernels/cpu/attention.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {

void register_attention_ops(Registry& r) {
  // Scores [..., Lq, Lk]: keys after the query (j > i + Lk - Lq) set to the
  // attribute "fill". With fill 0 the op is linear and its own derivative.
  OpDef def;
  def.name = "causal_mask";
  def.shape = [](const std::vector<Tensor>& in, const Attrs&) {
    check_floating("causal_mask", in[0]);
    REMAT_CHECK_SHAPE(in[0].dim() >= 2, "causal_mask: scores must be at least 2-d, got {}",
                      describe(in));
    return std::vector<TensorMeta>{TensorMeta::of(in[0])};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    on_device("causal_mask", out[0].device(),
              [&] { kernels::cpu::causal_mask(in[0], a.f("fill"), out[0]); });
  };
  def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{call1(op("causal_mask"), {a.grad()}, {{"fill", 0.0}})};
  };
  r.add(std::move(def));
}

}  // namespace remat::ops

namespace remat {

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    bool causal) {
  const char* name = "scaled_dot_product_attention";
  REMAT_CHECK_SHAPE(q.dim() >= 2 && k.dim() >= 2 && v.dim() >= 2,
                    "{}: q, k and v must be at least 2-d, got {}", name, ops::describe({q, k, v}));
  ops::check_same_dtype(name, q, k);
  ops::check_same_dtype(name, q, v);
  const int64_t e = q.shape().back();
  REMAT_CHECK_SHAPE(e > 0 && k.shape().back() == e && k.size(-2) == v.size(-2),
                    "{}: expected q [..., Lq, E], k [..., Lk, E], v [..., Lk, Ev] with E > 0, "
                    "got {}",
                    name, ops::describe({q, k, v}));
  Shape batch_q(q.shape().begin(), q.shape().end() - 2);
  Shape batch_k(k.shape().begin(), k.shape().end() - 2);
  Shape batch_v(v.shape().begin(), v.shape().end() - 2);
  broadcast_shapes(broadcast_shapes(batch_q, batch_k, name), batch_v, name);

  Tensor scores = matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(e)));
  if (causal) {
    // A query row with no visible key (Lq > Lk) becomes NaN, as in PyTorch.
    scores = ops::call1(ops::op("causal_mask"), {scores},
                        {{"fill", -std::numeric_limits<double>::infinity()}});
  }
  return matmul(softmax(scores, -1), v);
}

}  // namespace remat
