#include "remat/data/fashion_mnist.h"

#include <cstdlib>
#include <string>

namespace remat::data::fashion_mnist {
namespace {

// `directory/name`, or `directory/name.gz` when only the compressed file exists.
std::filesystem::path find_file(const std::filesystem::path& directory, const std::string& name) {
  const std::filesystem::path plain = directory / name;
  if (std::filesystem::exists(plain)) return plain;
  std::filesystem::path compressed = directory / (name + ".gz");
  if (std::filesystem::exists(compressed)) return compressed;
  throw Error(fmt::format(
      "Fashion-MNIST: neither {} nor {} exists (install Debian's dataset-fashion-mnist, or "
      "point ${} or fashion_mnist::Options::directory at the IDX files)",
      plain.string(), compressed.string(), kDirectoryEnvVar));
}

}  // namespace

std::filesystem::path default_directory() {
  const char* from_environment = std::getenv(kDirectoryEnvVar);
  if (from_environment != nullptr && *from_environment != '\0') return from_environment;
  return kDefaultDirectory;
}

LabeledImages load(std::string_view split, const Options& options) {
  REMAT_CHECK(split == "train" || split == "test",
              "fashion_mnist::load: split must be \"train\" or \"test\", got \"{}\"", split);
  const std::filesystem::path directory =
      options.directory.empty() ? default_directory() : options.directory;
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::filesystem::path images = find_file(directory, prefix + "-images-idx3-ubyte");
  const std::filesystem::path labels = find_file(directory, prefix + "-labels-idx1-ubyte");
  LabeledImages dataset = read_idx_dataset(images, labels, PixelScale::kUnit, kNumClasses);
  if (options.normalize) dataset.images.add_(-kMean).mul_(1.0 / kStd);
  return dataset;
}

}  // namespace remat::data::fashion_mnist
