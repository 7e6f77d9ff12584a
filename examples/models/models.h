// The three example models, shared by the example binaries and by
// tests/test_examples.cpp. Each exposes its repeated blocks as functions so a
// --checkpoint plan (remat::CheckpointPlan) can wrap them.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "remat/nn/nn.h"
#include "remat/remat.h"

namespace examples {

using BlockFn = std::function<remat::Tensor(const remat::Tensor&)>;

// Fashion-MNIST classifier: flatten, then per hidden width a block
// Linear -> ReLU -> Dropout, then Linear to the classes.
class MlpClassifier : public remat::nn::Module {
 public:
  MlpClassifier(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes,
                double dropout);
  remat::Tensor forward(const remat::Tensor& images) override { return run(images, {}); }
  remat::Tensor run(const remat::Tensor& images, const remat::CheckpointPlan& plan);

 private:
  std::vector<BlockFn> blocks() const;
  std::shared_ptr<remat::nn::ModuleList> layers_;
  std::shared_ptr<remat::nn::Linear> head_;
  double dropout_;
};

// A small ResNet for 1x28x28 images: a 3x3 stem (conv, BatchNorm, ReLU), then
// stages of BasicBlocks (the first block of each later stage halves the
// resolution and doubles the channels), global average pooling and a Linear
// head. The checkpointed blocks are the BasicBlocks.
class SmallResNet : public remat::nn::Module {
 public:
  SmallResNet(int64_t in_channels, int64_t width, int64_t stages, int64_t blocks_per_stage,
              int64_t classes);
  remat::Tensor forward(const remat::Tensor& images) override { return run(images, {}); }
  remat::Tensor run(const remat::Tensor& images, const remat::CheckpointPlan& plan);

 private:
  std::shared_ptr<remat::nn::Sequential> stem_;
  std::shared_ptr<remat::nn::Sequential> blocks_;
  std::shared_ptr<remat::nn::Linear> head_;
};

// GPT-style character model: token and learned position embeddings, pre-norm
// causal TransformerBlocks, a final LayerNorm and a Linear head to the
// vocabulary. Input int64 [B, T] with T <= context; output logits [B, T, vocab].
class CharTransformer : public remat::nn::Module {
 public:
  CharTransformer(int64_t vocab, int64_t context, int64_t d_model, int64_t heads, int64_t layers,
                  double dropout, remat::AttentionImpl attention = remat::AttentionImpl::Fused);
  remat::Tensor forward(const remat::Tensor& tokens) override { return run(tokens, {}); }
  remat::Tensor run(const remat::Tensor& tokens, const remat::CheckpointPlan& plan);
  int64_t context() const { return context_; }

 private:
  int64_t context_;
  std::shared_ptr<remat::nn::Embedding> token_embedding_;
  std::shared_ptr<remat::nn::Embedding> position_embedding_;
  std::shared_ptr<remat::nn::Sequential> blocks_;
  std::shared_ptr<remat::nn::LayerNorm> final_norm_;
  std::shared_ptr<remat::nn::Linear> head_;
  double dropout_;
};

}  // namespace examples
