// Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of ten kinds of clothing,
// 60000 for training and 10000 for testing, as Debian's dataset-fashion-mnist
// package installs them.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "remat/data/idx.h"

namespace remat::data::fashion_mnist {

inline constexpr std::string_view kDefaultDirectory = "/usr/share/datasets/fashion-mnist";
// Overrides kDefaultDirectory when set and Options::directory is empty.
inline constexpr const char* kDirectoryEnvVar = "REMAT_FASHION_MNIST_DIR";

inline constexpr int64_t kNumClasses = 10;
inline constexpr std::array<std::string_view, kNumClasses> kClassNames = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
// Pixel statistics of the training set on the [0, 1] scale.
inline constexpr double kMean = 0.2860;
inline constexpr double kStd = 0.3530;

struct Options {
  std::filesystem::path directory;  // empty: $REMAT_FASHION_MNIST_DIR, else kDefaultDirectory
  bool normalize = false;           // (pixel - kMean) / kStd instead of pixels in [0, 1]
};

// The directory load() reads when Options::directory is empty.
std::filesystem::path default_directory();

// split "train" or "test": reads {train,t10k}-images-idx3-ubyte and
// {train,t10k}-labels-idx1-ubyte, each with or without a .gz suffix.
LabeledImages load(std::string_view split, const Options& options = {});

}  // namespace remat::data::fashion_mnist
