// Scaled dot-product attention: the fused op (kernels/attention.h), which
// never holds the [Lq, Lk] scores, and the math composition (matmul,
// softmax, dropout, matmul) that a checkpoint policy can split. Both draw the
// dropout mask from the same numbers, so they agree to rounding.
#include <cmath>
#include <numeric>

#include "kernels/attention.h"
#include "kernels/dropout.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

const char* const kName = "scaled_dot_product_attention";

const kernels::AttentionKernels& attention_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::attention_kernels, REMAT_CUDA_KERNELS(attention_kernels));
}

Shape batch_of(const Tensor& t) { return Shape(t.shape().begin(), t.shape().end() - 2); }

// batch + [rows, cols]: an operand's, the scores' or the output's shape.
Shape with_matrix(Shape batch, int64_t rows, int64_t cols) {
  batch.push_back(rows);
  batch.push_back(cols);
  return batch;
}

DType lse_dtype(DType operands) { return operands == kFloat64 ? kFloat64 : kFloat32; }

// t [..., L, E] as the kernels' [N, H, L, E] with stride 1 in the last dim:
// a view where the batch dims fold into two, else a copy.
Tensor as_4d(const Tensor& t) {
  const Shape batch = batch_of(t);
  const int64_t heads = batch.empty() ? 1 : batch.back();
  const int64_t n = batch.empty() ? 1 : numel_of(Shape(batch.begin(), batch.end() - 1));
  const Tensor folded = t.reshape({n, heads, t.size(-2), t.size(-1)});
  return folded.size(3) > 1 && folded.strides()[3] != 1 ? folded.contiguous() : folded;
}

// The contiguous [B..., Lq] lse as the kernels' [N, H, Lq], beside q4.
Tensor rows_3d(const Tensor& lse, const Tensor& q4) {
  return lse.view({q4.size(0), q4.size(1), q4.size(2)});
}

kernels::AttentionParams params_of(const Attrs& a) {
  const auto& attrs = a.get<AttentionAttrs>();
  kernels::AttentionParams p{.scale = attrs.scale,
                             .causal = attrs.causal,
                             .dropout_p = attrs.dropout_p,
                             .keep_scale = kernels::dropout_keep_scale(attrs.dropout_p)};
  if (attrs.dropout_p > 0) {
    REMAT_CHECK(a.philox.has_value(), "{}: no random numbers reserved for the dropout mask", kName);
    p.seed = a.philox->seed;
    p.offset = a.philox->offset;
  }
  return p;
}

// q [B..., Lq, E], k [B..., Lk, E], v [B..., Lk, Ev] with one batch shape B
// (the public function broadcasts them), and the mask, when defined,
// broadcastable to [B..., Lq, Lk] in q's dtype.
void check_operands(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                    const Tensor& mask, const AttentionAttrs& attrs) {
  check_floating(op, q);
  check_same_dtype(op, q, k);
  check_same_dtype(op, q, v);
  REMAT_CHECK_SHAPE(q.dim() >= 2 && k.dim() == q.dim() && v.dim() == q.dim() && q.size(-1) > 0 &&
                        k.size(-1) == q.size(-1) && v.size(-2) == k.size(-2) &&
                        batch_of(k) == batch_of(q) && batch_of(v) == batch_of(q),
                    "{}: expected q [B..., Lq, E], k [B..., Lk, E], v [B..., Lk, Ev] with one "
                    "batch shape B and E > 0, got {}",
                    op, describe({q, k, v}));
  if (mask.defined()) {
    check_same_dtype(op, q, mask);
    const Shape scores = with_matrix(batch_of(q), q.size(-2), k.size(-2));
    REMAT_CHECK_SHAPE(mask.dim() <= q.dim() && broadcast_shapes(mask.shape(), scores, op) == scores,
                      "{}: the mask {} does not broadcast to the scores {}", op,
                      shape_str(mask.shape()), shape_str(scores));
  }
  REMAT_CHECK(attrs.dropout_p >= 0 && attrs.dropout_p <= 1,
              "{}: dropout_p must be in [0, 1], got {}", op, attrs.dropout_p);
}

// The mask as the kernels read it: [N, H, Lq, Lk], stride 0 where it broadcasts.
Tensor mask_4d(const Tensor& mask, const Tensor& q, const Tensor& k) {
  if (!mask.defined()) return mask;
  return as_4d(mask.expand(with_matrix(batch_of(q), q.size(-2), k.size(-2))));
}

// inputs q, k, v, mask (possibly undefined); attrs AttentionAttrs. Outputs:
// out [B..., Lq, Ev] and, auxiliary, lse [B..., Lq] (float32; float64 for
// float64), the row log-sum-exp the backward regenerates probabilities from.
OpDef attention_def() {
  OpDef def;
  def.name = kName;
  def.attrs = attrs_type<AttentionAttrs>();
  def.visible_outputs = 1;
  def.compute_reduced_in_float = false;  // the kernels accumulate 16-bit tiles in float
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    REMAT_CHECK(in.size() == 4,
                "{}: expected (q, k, v, mask), mask possibly undefined, got {} operands", kName,
                in.size());
    const Tensor &q = in[0], &k = in[1], &v = in[2];
    check_operands(kName, q, k, v, in[3], a.get<AttentionAttrs>());
    const Shape out = with_matrix(batch_of(q), q.size(-2), v.size(-1));
    Shape lse = batch_of(q);
    lse.push_back(q.size(-2));
    // On the CPU out [B..., H, Lq, Ev] is laid out [B..., Lq, H, Ev], as
    // PyTorch's CPU kernel does: merging the heads back (transpose, reshape
    // to [B..., Lq, H x Ev]) is then a view, not a copy that the output
    // projection would save beside out. The CUDA kernels write it contiguous.
    std::vector<int64_t> order;
    if (q.device().is_cpu() && out.size() >= 3) {
      order.resize(out.size());
      std::iota(order.begin(), order.end(), 0);
      std::swap(order[out.size() - 3], order[out.size() - 2]);
    }
    return std::vector<TensorMeta>{{out, q.dtype(), q.device(), order},
                                   {lse, lse_dtype(q.dtype()), q.device()}};
  };
  def.random_count = [](const std::vector<Tensor>& in, const Attrs& a) -> int64_t {
    if (a.get<AttentionAttrs>().dropout_p == 0) return 0;
    return numel_of(batch_of(in[0])) * in[0].size(-2) * in[1].size(-2);
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const Tensor &q = in[0], &k = in[1], q4 = as_4d(q), out4 = as_4d(out[0]);
    REMAT_CHECK(out4.data_ptr() == out[0].data_ptr(), "{}: the output {} is not a 4-d view", kName,
                TensorMeta::of(out[0]).str());
    attention_kernels(kName, q.device())
        .forward(q4, as_4d(k), as_4d(in[2]), mask_4d(in[3], q, k), params_of(a), out4,
                 rows_3d(out[1], q4));
  };
  def.save_inputs = {0, 1, 2, 3};
  def.save_outputs = {0, 1};
  def.exact_outputs = {1};
  def.backward = [](const BackwardArgs& a) {
    if (a.needs(3)) {
      throw NotImplementedError(fmt::format(
          "{}: the gradient of the mask (use AttentionImpl::Math for a learned mask)", kName));
    }
    std::vector<Tensor> grads =
        call(op<"scaled_dot_product_attention_backward">(),
             {a.grad(), a.input(0), a.input(1), a.input(2), a.input(3), a.output(0), a.output(1)},
             a.attrs);
    grads.emplace_back();  // the mask's: none
    return grads;
  };
  return def;
}

// inputs grad_out, q, k, v, mask (possibly undefined), out, lse; attrs the
// forward's (its dropout numbers too). Outputs the gradients of q, k and v.
OpDef attention_backward_def() {
  OpDef def;
  def.name = "scaled_dot_product_attention_backward";
  def.attrs = attrs_type<AttentionAttrs>();
  def.visible_outputs = -1;
  def.compute_reduced_in_float = false;
  def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const char* name = "scaled_dot_product_attention_backward";
    REMAT_CHECK(in.size() == 7, "{}: expected (grad_out, q, k, v, mask, out, lse), got {} operands",
                name, in.size());
    const Tensor &g = in[0], &q = in[1], &k = in[2], &v = in[3], &out = in[5], &lse = in[6];
    check_operands(name, q, k, v, in[4], a.get<AttentionAttrs>());
    check_same_dtype(name, q, g);
    check_same_dtype(name, q, out);
    check_dtype(name, lse, lse_dtype(q.dtype()), "lse");
    Shape rows = batch_of(q);
    rows.push_back(q.size(-2));
    REMAT_CHECK_SHAPE(g.shape() == out.shape() && batch_of(out) == batch_of(q) &&
                          out.size(-2) == q.size(-2) && out.size(-1) == v.size(-1) &&
                          lse.shape() == rows,
                      "{}: gradient, output and lse do not match q, k, v: {}", name,
                      describe({g, q, k, v, out, lse}));
    return std::vector<TensorMeta>{TensorMeta::of(q), TensorMeta::of(k), TensorMeta::of(v)};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const Tensor &q = in[1], &k = in[2], q4 = as_4d(q);
    attention_kernels("scaled_dot_product_attention_backward", q.device())
        .backward(as_4d(in[0]), q4, as_4d(k), as_4d(in[3]), mask_4d(in[4], q, k), as_4d(in[5]),
                  rows_3d(in[6].contiguous(), q4), params_of(a), as_4d(out[0]), as_4d(out[1]),
                  as_4d(out[2]));
  };
  return def;
}

}  // namespace

void register_attention_ops(Registry& r) {
  r.add(attention_def());
  r.add(attention_backward_def());
}

}  // namespace remat::ops

namespace remat {

namespace {

// Expands q, k and v to the common batch shape (recorded: the gradients
// sum back).
Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                       const ops::AttentionAttrs& attrs, const Shape& batch) {
  auto expanded = [&batch](const Tensor& t) {
    const Shape shape = ops::with_matrix(batch, t.size(-2), t.size(-1));
    return t.shape() == shape ? t : expand(t, shape);
  };
  REMAT_CHECK(!mask.defined() || !mask.requires_grad(),
              "{}: the fused attention computes no gradient for the mask; use "
              "AttentionImpl::Math for a learned mask",
              ops::kName);
  return ops::call1(ops::op<"scaled_dot_product_attention">(),
                    {expanded(q), expanded(k), expanded(v), mask}, attrs);
}

Tensor math_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                      const ops::AttentionAttrs& attrs) {
  Tensor scores = matmul(q, k.transpose(-1, -2)) * attrs.scale;
  if (mask.defined()) scores = scores + mask;
  // The fused softmax hides causal keys without exponentiating them; a query
  // row with no visible key becomes NaN, as in PyTorch.
  const Tensor weights =
      ops::call1(ops::op<"softmax">(), {scores}, ops::DimAttrs{.dim = -1, .causal = attrs.causal});
  return matmul(dropout(weights, attrs.dropout_p, true), v);
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options) {
  const char* name = ops::kName;
  REMAT_CHECK_SHAPE(q.dim() >= 2 && k.dim() >= 2 && v.dim() >= 2,
                    "{}: q, k and v must be at least 2-d, got {}", name, ops::describe({q, k, v}));
  ops::check_same_dtype(name, q, k);
  ops::check_same_dtype(name, q, v);
  const int64_t e = q.shape().back();
  REMAT_CHECK_SHAPE(e > 0 && k.shape().back() == e && k.size(-2) == v.size(-2),
                    "{}: expected q [..., Lq, E], k [..., Lk, E], v [..., Lk, Ev] with E > 0, "
                    "got {}",
                    name, ops::describe({q, k, v}));
  const Shape batch = broadcast_shapes(broadcast_shapes(ops::batch_of(q), ops::batch_of(k), name),
                                       ops::batch_of(v), name);
  REMAT_CHECK(options.dropout_p >= 0 && options.dropout_p <= 1,
              "{}: dropout_p must be in [0, 1], got {}", name, options.dropout_p);
  const ops::AttentionAttrs attrs{
      .scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(e))),
      .causal = options.causal,
      .dropout_p = options.dropout_p};
  Tensor mask = options.mask;
  if (mask.defined() && mask.dtype() == kBool) mask = log(mask.to(q.dtype()));  // 1 -> 0, 0 -> -inf
  return options.impl == AttentionImpl::Fused ? fused_attention(q, k, v, mask, attrs, batch)
                                              : math_attention(q, k, v, mask, attrs);
}

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    bool causal) {
  return scaled_dot_product_attention(q, k, v, AttentionOptions{.causal = causal});
}

}  // namespace remat
