#include "remat/nn/resnet.h"

#include "remat/ops.h"

namespace remat::nn {
namespace {

// torchvision's helpers: convolutions without bias (a BatchNorm follows).
std::shared_ptr<Conv2d> conv3x3(int64_t in_channels, int64_t out_channels, int64_t stride) {
  return std::make_shared<Conv2d>(in_channels, out_channels, /*kernel_size=*/3, stride,
                                  /*padding=*/1, /*dilation=*/1, /*groups=*/1, /*bias=*/false);
}

std::shared_ptr<Conv2d> conv1x1(int64_t in_channels, int64_t out_channels, int64_t stride) {
  return std::make_shared<Conv2d>(in_channels, out_channels, /*kernel_size=*/1, stride,
                                  /*padding=*/0, /*dilation=*/1, /*groups=*/1, /*bias=*/false);
}

}  // namespace

BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride)
    : Module("BasicBlock") {
  conv1_ = register_module("conv1", conv3x3(in_channels, out_channels, stride));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out_channels));
  conv2_ = register_module("conv2", conv3x3(out_channels, out_channels, 1));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out_channels));
  if (stride != 1 || in_channels != out_channels) {
    downsample_ = register_module("downsample",
                                  std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                      conv1x1(in_channels, out_channels, stride),
                                      std::make_shared<BatchNorm2d>(out_channels)}));
  }
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor out = relu(bn1_->forward(conv1_->forward(x)));
  out = bn2_->forward(conv2_->forward(out));
  return relu(out + (downsample_ ? downsample_->forward(x) : x));
}

}  // namespace remat::nn
