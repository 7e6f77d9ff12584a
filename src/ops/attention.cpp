// Scaled dot-product attention, composed of matmul, mul_scalar and softmax
// (with its fused causal mask), so a checkpoint policy can keep the matmul
// outputs and recompute the rest.
#include <cmath>

#include "ops/dispatch.h"
#include "remat/ops.h"

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

  const Tensor scores = matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(e)));
  // A query row with no visible key (Lq > Lk) becomes NaN, as in PyTorch.
  const Tensor weights =
      ops::call1(ops::op<"softmax">(), {scores}, ops::DimAttrs{.dim = -1, .causal = causal});
  return matmul(weights, v);
}

}  // namespace remat
