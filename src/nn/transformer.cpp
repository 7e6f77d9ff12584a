#include "remat/nn/transformer.h"

#include "remat/ops.h"

namespace remat::nn {

MultiheadAttention::MultiheadAttention(int64_t d_model, int64_t heads, bool causal, bool bias,
                                       AttentionImpl impl)
    : Module("MultiheadAttention"), heads_(heads), causal_(causal), impl_(impl) {
  REMAT_CHECK(heads > 0 && d_model > 0 && d_model % heads == 0,
              "MultiheadAttention: d_model ({}) must be a positive multiple of heads ({})", d_model,
              heads);
  q_proj_ = register_module("q_proj", std::make_shared<Linear>(d_model, d_model, bias));
  k_proj_ = register_module("k_proj", std::make_shared<Linear>(d_model, d_model, bias));
  v_proj_ = register_module("v_proj", std::make_shared<Linear>(d_model, d_model, bias));
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(d_model, d_model, bias));
}

Tensor MultiheadAttention::split_heads(const Tensor& x) const {
  const int64_t d_model = x.size(2);
  return reshape(x, {x.size(0), x.size(1), heads_, d_model / heads_}).transpose(1, 2);
}

Tensor MultiheadAttention::forward(const Tensor& x) {
  const int64_t d_model = q_proj_->in_features();
  REMAT_CHECK_SHAPE(x.dim() == 3 && x.size(2) == d_model,
                    "MultiheadAttention: input must be [B, T, {}], got {}", d_model,
                    shape_str(x.shape()));
  Tensor attended = scaled_dot_product_attention(
      split_heads(q_proj_->forward(x)), split_heads(k_proj_->forward(x)),
      split_heads(v_proj_->forward(x)), {.causal = causal_, .impl = impl_});
  return out_proj_->forward(reshape(attended.transpose(1, 2), x.shape()));
}

TransformerBlock::TransformerBlock(int64_t d_model, int64_t heads, bool causal, double dropout,
                                   MlpActivation activation, AttentionImpl attention)
    : Module("TransformerBlock"), dropout_(dropout) {
  REMAT_CHECK(dropout >= 0.0 && dropout <= 1.0,
              "TransformerBlock: dropout must be in [0, 1], got {}", dropout);
  ln1_ = register_module("ln1", std::make_shared<LayerNorm>(d_model));
  attn_ = register_module("attn", std::make_shared<MultiheadAttention>(d_model, heads, causal,
                                                                       /*bias=*/true, attention));
  ln2_ = register_module("ln2", std::make_shared<LayerNorm>(d_model));
  mlp_ = register_module("mlp", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                    std::make_shared<Linear>(d_model, 4 * d_model),
                                    activation == MlpActivation::ReLU
                                        ? std::shared_ptr<Module>(std::make_shared<ReLU>())
                                        : std::make_shared<GELU>(),
                                    std::make_shared<Linear>(4 * d_model, d_model)}));
}

Tensor TransformerBlock::forward(const Tensor& x) { return mlp_residual(attention_residual(x)); }

Tensor TransformerBlock::attention_residual(const Tensor& x) {
  return x + remat::dropout(attn_->forward(ln1_->forward(x)), dropout_, is_training());
}

Tensor TransformerBlock::mlp_residual(const Tensor& h) {
  return h + remat::dropout(mlp_->forward(ln2_->forward(h)), dropout_, is_training());
}

}  // namespace remat::nn
