#include "models.h"

namespace examples {

using remat::Tensor;
namespace nn = remat::nn;

MlpClassifier::MlpClassifier(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes,
                             double dropout)
    : Module("MlpClassifier"),
      layers_(register_module("layers", std::make_shared<nn::ModuleList>())),
      dropout_(dropout) {
  int64_t width = inputs;
  for (int64_t h : hidden) {
    layers_->push_back(std::make_shared<nn::Linear>(width, h));
    width = h;
  }
  head_ = register_module("head", std::make_shared<nn::Linear>(width, classes));
}

std::vector<BlockFn> MlpClassifier::blocks() const {
  std::vector<BlockFn> fns;
  for (const auto& layer : *layers_) {
    fns.push_back([this, layer](const Tensor& x) {
      return remat::dropout(remat::relu(layer->forward(x)), dropout_, is_training());
    });
  }
  return fns;
}

Tensor MlpClassifier::run(const Tensor& images, const remat::CheckpointPlan& plan) {
  const Tensor flat = remat::reshape(images, {images.size(0), -1});
  return head_->forward(remat::checkpoint_blocks(blocks(), flat, plan));
}

SmallResNet::SmallResNet(int64_t in_channels, int64_t width, int64_t stages,
                         int64_t blocks_per_stage, int64_t classes)
    : Module("SmallResNet") {
  stem_ = register_module(
      "stem", std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
                  std::make_shared<nn::Conv2d>(in_channels, width, 3, 1, 1, 1, 1, false),
                  std::make_shared<nn::BatchNorm2d>(width), std::make_shared<nn::ReLU>()}));
  blocks_ = register_module("blocks", std::make_shared<nn::Sequential>());
  int64_t channels = width;
  for (int64_t s = 0; s < stages; ++s) {
    const int64_t out = width << s;
    for (int64_t b = 0; b < blocks_per_stage; ++b) {
      const int64_t stride = s > 0 && b == 0 ? 2 : 1;
      blocks_->push_back(std::make_shared<nn::BasicBlock>(channels, out, stride));
      channels = out;
    }
  }
  head_ = register_module("head", std::make_shared<nn::Linear>(channels, classes));
}

Tensor SmallResNet::run(const Tensor& images, const remat::CheckpointPlan& plan) {
  Tensor h = remat::checkpoint_blocks(blocks_->functions(), stem_->forward(images), plan);
  h = remat::adaptive_avg_pool2d(h, {1, 1});
  return head_->forward(remat::reshape(h, {h.size(0), -1}));
}

CharTransformer::CharTransformer(int64_t vocab, int64_t context, int64_t d_model, int64_t heads,
                                 int64_t layers, double dropout, remat::AttentionImpl attention)
    : Module("CharTransformer"), context_(context), dropout_(dropout) {
  token_embedding_ =
      register_module("token_embedding", std::make_shared<nn::Embedding>(vocab, d_model));
  position_embedding_ =
      register_module("position_embedding", std::make_shared<nn::Embedding>(context, d_model));
  blocks_ = register_module("blocks", std::make_shared<nn::Sequential>());
  for (int64_t i = 0; i < layers; ++i) {
    blocks_->push_back(std::make_shared<nn::TransformerBlock>(d_model, heads, true, dropout,
                                                              nn::MlpActivation::GELU, attention));
  }
  final_norm_ = register_module("final_norm", std::make_shared<nn::LayerNorm>(d_model));
  head_ = register_module("head", std::make_shared<nn::Linear>(d_model, vocab));
}

Tensor CharTransformer::run(const Tensor& tokens, const remat::CheckpointPlan& plan) {
  const int64_t length = tokens.size(1);
  REMAT_CHECK(length <= context_, "CharTransformer: {} tokens exceed the context of {}", length,
              context_);
  const Tensor positions = remat::arange(length, remat::kInt64, tokens.device());
  Tensor h = token_embedding_->forward(tokens) + position_embedding_->forward(positions);
  h = remat::dropout(h, dropout_, is_training());
  h = remat::checkpoint_blocks(blocks_->functions(), h, plan);
  return head_->forward(final_norm_->forward(h));
}

}  // namespace examples
