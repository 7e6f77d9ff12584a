// ResNet's basic residual block (He et al. 2016), laid out as torchvision's.
#pragma once

#include <cstdint>
#include <memory>

#include "remat/nn/containers.h"
#include "remat/nn/layers.h"

namespace remat::nn {

// relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) with 3x3 convolutions
// without bias; conv1 carries the stride. The shortcut is the identity when
// the shape is kept, else `downsample`: a 1x1 convolution with the stride
// followed by BatchNorm2d (downsample.0, downsample.1).
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride = 1);
  Tensor forward(const Tensor& x) override;

  bool has_downsample() const { return downsample_ != nullptr; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<Conv2d> conv2_;
  std::shared_ptr<BatchNorm2d> bn2_;
  std::shared_ptr<Sequential> downsample_;  // null for the identity shortcut
};

}  // namespace remat::nn
