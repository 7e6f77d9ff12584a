// The IDX reader (plain or gzip) on arbitrary files, read both as images and
// as labels: what it accepts must hold exactly the pixels and labels the file does.
#include <algorithm>

#include "fuzz.h"
#include "remat/data/idx.h"

using remat::fuzz::expect;

namespace {

constexpr int64_t kClasses = 10;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const remat::fuzz::InputFile file(".idx");
  const std::filesystem::path& path = file.write(data, size);
  const auto images = remat::fuzz::accepted(
      [&] { return remat::data::read_idx_images(path, remat::data::PixelScale::kRaw); });
  if (images) {
    expect(images->dim() == 4 && images->size(1) == 1, "images of shape {}",
           remat::shape_str(images->shape()));
    const std::vector<float> pixels = images->to_vector<float>();
    // Without compression the pixels are the bytes after the 16-byte header.
    if (size >= 16 && data[0] == 0) {
      expect(pixels.size() == size - 16, "{} pixels from {} bytes", pixels.size(), size);
      for (size_t i = 0; i < pixels.size(); ++i) {
        expect(pixels[i] == data[16 + i], "pixel {} is {}, byte {}", i, pixels[i], data[16 + i]);
      }
    }
  }
  const auto labels =
      remat::fuzz::accepted([&] { return remat::data::read_idx_labels(path, kClasses); });
  if (labels) {
    const std::vector<int64_t> values = labels->to_vector<int64_t>();
    expect(
        std::all_of(values.begin(), values.end(), [](int64_t v) { return v >= 0 && v < kClasses; }),
        "a label outside [0, {})", kClasses);
  }
  return 0;
}
