// The basic layers. Parameters are float32 on the CPU when constructed (move
// them with Module::to) and initialised as in PyTorch from remat's default
// generator, so manual_seed makes construction deterministic. docs/nn.md lists
// each initialisation.
#pragma once

#include <cstdint>
#include <string>

#include "remat/nn/module.h"

namespace remat::nn {

// y = x W^T + b over the last dim of x. weight [out, in], bias [out].
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) override;

  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }  // undefined without bias

 private:
  Tensor weight_;
  Tensor bias_;
};

// 2-d convolution over NCHW input with square kernel, stride, padding and
// dilation. weight [out, in / groups, kernel, kernel], bias [out].
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
         int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1, bool bias = true);
  Tensor forward(const Tensor& x) override;

  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }  // undefined without bias

 private:
  Tensor weight_;
  Tensor bias_;
  int64_t stride_;
  int64_t padding_;
  int64_t dilation_;
  int64_t groups_;
};

// Batch normalisation over the channels of NCHW input. In training mode it
// normalises with the batch statistics and moves running_mean/running_var by
// `momentum` (and counts num_batches_tracked); in eval mode the running
// statistics normalise. Under checkpoint the update happens once per forward:
// a replay does not repeat it.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;

  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }
  Tensor running_mean() const { return running_mean_; }
  Tensor running_var() const { return running_var_; }
  Tensor num_batches_tracked() const { return num_batches_tracked_; }  // int64 scalar

 protected:
  // The running statistics stay float32 under bfloat16/float16: they
  // accumulate over steps, and batch_norm takes them in float32 for 16-bit
  // inputs.
  DType buffer_dtype(const std::string& name, DType dtype) const override;

 private:
  Tensor weight_;
  Tensor bias_;
  Tensor running_mean_;
  Tensor running_var_;
  Tensor num_batches_tracked_;
  double eps_;
  double momentum_;
};

// Layer normalisation over the last dim, with a learned scale and shift.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Tensor forward(const Tensor& x) override;

  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 private:
  Tensor weight_;
  Tensor bias_;
  double eps_;
};

// A lookup table: integer indices [...] -> rows [..., dim] of weight [num, dim].
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim);
  Tensor forward(const Tensor& indices) override;

  Tensor weight() const { return weight_; }

 private:
  Tensor weight_;
};

// Zeroes each element with probability p and scales the rest by 1 / (1 - p)
// in training mode; the identity in eval mode.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override;

 private:
  double p_;
};

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override;
};

// approximate: "none" (exact, erf) or "tanh".
class GELU : public Module {
 public:
  explicit GELU(std::string approximate = "none");
  Tensor forward(const Tensor& x) override;

 private:
  std::string approximate_;
};

}  // namespace remat::nn
