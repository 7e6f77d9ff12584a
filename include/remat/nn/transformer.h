// Self-attention and the pre-norm transformer block (GPT-2's arrangement).
#pragma once

#include <cstdint>
#include <memory>

#include "remat/nn/containers.h"
#include "remat/nn/layers.h"
#include "remat/ops.h"

namespace remat::nn {

// Multi-head self-attention on [B, T, d_model]: q, k and v projections split
// into `heads` heads of d_model / heads, scaled_dot_product_attention on
// [B, heads, T, head_dim] (causal: position t attends to positions <= t),
// heads merged and projected by out_proj. The attention is the fused op by
// default (O(T) memory); AttentionImpl::Math keeps the [T, T] probabilities,
// which a checkpoint policy can then keep or recompute on their own.
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t d_model, int64_t heads, bool causal = false, bool bias = true,
                     AttentionImpl impl = AttentionImpl::Fused);
  Tensor forward(const Tensor& x) override;

  int64_t heads() const { return heads_; }

 private:
  // [B, T, d_model] -> [B, heads, T, head_dim]
  Tensor split_heads(const Tensor& x) const;

  int64_t heads_;
  bool causal_;
  AttentionImpl impl_;
  std::shared_ptr<Linear> q_proj_;
  std::shared_ptr<Linear> k_proj_;
  std::shared_ptr<Linear> v_proj_;
  std::shared_ptr<Linear> out_proj_;
};

// The MLP's nonlinearity: GELU (exact erf, GPT-2) or ReLU (the original
// transformer; PyTorch's TransformerEncoderLayer default).
enum class MlpActivation { GELU, ReLU };

// x + dropout(attn(ln1(x))), then x + dropout(mlp(ln2(x))) with
// mlp = Linear(d, 4d), activation, Linear(4d, d). Children: ln1, attn, ln2,
// mlp (a Sequential: mlp.0, mlp.1, mlp.2). A function of its input only, so it
// can run inside checkpoint(); so can each residual half, which is how a
// plan checkpoints the attention or the MLP sublayer alone.
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t d_model, int64_t heads, bool causal = false, double dropout = 0.0,
                   MlpActivation activation = MlpActivation::GELU,
                   AttentionImpl attention = AttentionImpl::Fused);
  Tensor forward(const Tensor& x) override;
  // x + dropout(attn(ln1(x)))
  Tensor attention_residual(const Tensor& x);
  // h + dropout(mlp(ln2(h)))
  Tensor mlp_residual(const Tensor& h);

 private:
  std::shared_ptr<LayerNorm> ln1_;
  std::shared_ptr<MultiheadAttention> attn_;
  std::shared_ptr<LayerNorm> ln2_;
  std::shared_ptr<Sequential> mlp_;
  double dropout_;
};

}  // namespace remat::nn
