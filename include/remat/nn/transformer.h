// Self-attention and the pre-norm transformer block (GPT-2's arrangement).
#pragma once

#include <cstdint>
#include <memory>

#include "remat/nn/containers.h"
#include "remat/nn/layers.h"

namespace remat::nn {

// Multi-head self-attention on [B, T, d_model]: q, k and v projections split
// into `heads` heads of d_model / heads, scaled_dot_product_attention on
// [B, heads, T, head_dim] (causal: position t attends to positions <= t),
// heads merged and projected by out_proj.
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t d_model, int64_t heads, bool causal = false, bool bias = true);
  Tensor forward(const Tensor& x) override;

  int64_t heads() const { return heads_; }

 private:
  // [B, T, d_model] -> [B, heads, T, head_dim]
  Tensor split_heads(const Tensor& x) const;

  int64_t heads_;
  bool causal_;
  std::shared_ptr<Linear> q_proj_;
  std::shared_ptr<Linear> k_proj_;
  std::shared_ptr<Linear> v_proj_;
  std::shared_ptr<Linear> out_proj_;
};

// x + dropout(attn(ln1(x))), then x + dropout(mlp(ln2(x))) with
// mlp = Linear(d, 4d), GELU (exact), Linear(4d, d). Children: ln1, attn, ln2,
// mlp (a Sequential: mlp.0, mlp.1, mlp.2). A function of its input only, so it
// can run inside checkpoint().
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t d_model, int64_t heads, bool causal = false, double dropout = 0.0);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<LayerNorm> ln1_;
  std::shared_ptr<MultiheadAttention> attn_;
  std::shared_ptr<LayerNorm> ln2_;
  std::shared_ptr<Sequential> mlp_;
  double dropout_;
};

}  // namespace remat::nn
