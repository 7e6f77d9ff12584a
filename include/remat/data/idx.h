// IDX files, the format of (Fashion-)MNIST: a big-endian header (magic number
// 0x0000 0x08 <rank>, then one uint32 size per dimension) followed by the
// unsigned bytes in row-major order. Files may be gzip-compressed; zlib inflates
// them and passes uncompressed files through unchanged.
#pragma once

#include <cstdint>
#include <filesystem>

#include "remat/core/tensor.h"

namespace remat::data {

enum class PixelScale {
  kUnit,  // bytes / 255: pixels in [0, 1]
  kRaw,   // the bytes as they are: pixels in [0, 255]
};

// float32 [N, 1, rows, cols] from an IDX file of N rows x cols images (magic 0x00000803).
Tensor read_idx_images(const std::filesystem::path& path, PixelScale scale = PixelScale::kUnit);

// int64 [N] from an IDX label file (magic 0x00000801). When num_classes is
// positive every label must lie in [0, num_classes).
Tensor read_idx_labels(const std::filesystem::path& path, int64_t num_classes = 0);

struct LabeledImages {
  Tensor images;  // float32 [N, 1, rows, cols]
  Tensor labels;  // int64 [N]
  int64_t size() const { return labels.size(0); }
};

// An image file and its label file, which must hold the same number of samples.
LabeledImages read_idx_dataset(const std::filesystem::path& images_path,
                               const std::filesystem::path& labels_path,
                               PixelScale scale = PixelScale::kUnit, int64_t num_classes = 0);

}  // namespace remat::data
