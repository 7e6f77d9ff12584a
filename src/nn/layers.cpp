#include "remat/nn/layers.h"

#include "nn/init.h"
#include "ops/registry.h"
#include "remat/ops.h"

namespace remat::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias) : Module("Linear") {
  REMAT_CHECK(in_features > 0 && out_features > 0,
              "Linear: in_features and out_features must be positive, got {} and {}", in_features,
              out_features);
  weight_ =
      register_parameter("weight", init::fan_in_uniform({out_features, in_features}, in_features));
  if (bias) bias_ = register_parameter("bias", init::fan_in_uniform({out_features}, in_features));
}

Tensor Linear::forward(const Tensor& x) {
  REMAT_CHECK_SHAPE(x.dim() >= 1 && x.size(-1) == in_features(),
                    "Linear({}, {}): input must be [..., {}], got {}", in_features(),
                    out_features(), in_features(), shape_str(x.shape()));
  // One 2-d product over all leading dims: a batched product with a broadcast
  // weight would make backward materialise one weight gradient per batch entry.
  Shape out_shape = x.shape();
  out_shape.back() = out_features();
  // The bias rides in the matmul op: one op, one pass, and Policy::save_ops({"matmul"})
  // keeps the layer's output.
  return reshape(matmul(reshape(x, {-1, in_features()}), weight_.transpose(0, 1), bias_),
                 out_shape);
}

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
               int64_t padding, int64_t dilation, int64_t groups, bool bias)
    : Module("Conv2d"), stride_(stride), padding_(padding), dilation_(dilation), groups_(groups) {
  REMAT_CHECK(in_channels > 0 && out_channels > 0 && kernel_size > 0,
              "Conv2d: channels and kernel_size must be positive, got {}, {}, {}", in_channels,
              out_channels, kernel_size);
  REMAT_CHECK(groups > 0 && in_channels % groups == 0 && out_channels % groups == 0,
              "Conv2d: in_channels ({}) and out_channels ({}) must be divisible by groups ({})",
              in_channels, out_channels, groups);
  const int64_t fan_in = in_channels / groups * kernel_size * kernel_size;
  weight_ = register_parameter(
      "weight",
      init::fan_in_uniform({out_channels, in_channels / groups, kernel_size, kernel_size}, fan_in));
  if (bias) bias_ = register_parameter("bias", init::fan_in_uniform({out_channels}, fan_in));
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, weight_, bias_, {stride_, stride_}, {padding_, padding_}, {dilation_, dilation_},
                groups_);
}

BatchNorm2d::BatchNorm2d(int64_t channels, double eps, double momentum)
    : Module("BatchNorm2d"), eps_(eps), momentum_(momentum) {
  REMAT_CHECK(channels > 0, "BatchNorm2d: channels must be positive, got {}", channels);
  weight_ = register_parameter("weight", ones({channels}));
  bias_ = register_parameter("bias", zeros({channels}));
  running_mean_ = register_buffer("running_mean", zeros({channels}));
  running_var_ = register_buffer("running_var", ones({channels}));
  num_batches_tracked_ = register_buffer("num_batches_tracked", zeros({}, kInt64));
}

DType BatchNorm2d::buffer_dtype(const std::string& name, DType dtype) const {
  const bool statistic = name == "running_mean" || name == "running_var";
  return statistic && is_reduced_float(dtype) ? kFloat32 : dtype;
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  REMAT_CHECK_SHAPE(x.dim() == 4, "BatchNorm2d: input must be [N, C, H, W], got {}",
                    shape_str(x.shape()));
  // The op moves the running statistics; the count is host-side bookkeeping.
  // Both happen here, in the real forward, and never in a checkpoint replay
  // or a profile_blocks run.
  // The count moves only once the op has succeeded, so a forward that fails
  // (out of memory) moves neither.
  Tensor y =
      batch_norm(x, running_mean_, running_var_, weight_, bias_, is_training(), momentum_, eps_);
  if (is_training() && !ops::side_effects_suppressed()) num_batches_tracked_.add_(1.0);
  return y;
}

LayerNorm::LayerNorm(int64_t dim, double eps) : Module("LayerNorm"), eps_(eps) {
  REMAT_CHECK(dim > 0, "LayerNorm: dim must be positive, got {}", dim);
  weight_ = register_parameter("weight", ones({dim}));
  bias_ = register_parameter("bias", zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, weight_, bias_, eps_); }

Embedding::Embedding(int64_t num_embeddings, int64_t dim) : Module("Embedding") {
  REMAT_CHECK(num_embeddings > 0 && dim > 0,
              "Embedding: num_embeddings and dim must be positive, got {} and {}", num_embeddings,
              dim);
  weight_ = register_parameter("weight", randn({num_embeddings, dim}));
}

Tensor Embedding::forward(const Tensor& indices) { return embedding(weight_, indices); }

Dropout::Dropout(double p) : Module("Dropout"), p_(p) {
  REMAT_CHECK(p >= 0.0 && p <= 1.0, "Dropout: p must be in [0, 1], got {}", p);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p_, is_training()); }

Tensor ReLU::forward(const Tensor& x) { return relu(x); }

GELU::GELU(std::string approximate) : Module("GELU"), approximate_(std::move(approximate)) {
  REMAT_CHECK(approximate_ == "none" || approximate_ == "tanh",
              "GELU: approximate must be \"none\" or \"tanh\", got \"{}\"", approximate_);
}

Tensor GELU::forward(const Tensor& x) { return gelu(x, approximate_); }

}  // namespace remat::nn
