#include "remat/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace remat::data {
namespace {

// zlib inflates gzip files and reads any other file as it is.
class GzipOrPlainFile {
 public:
  explicit GzipOrPlainFile(const std::filesystem::path& path) : name_(path.string()) {
    file_ = gzopen(name_.c_str(), "rb");
    REMAT_CHECK(file_ != nullptr, "{}: cannot open: {}", name_, std::strerror(errno));
    // Fewer, larger reads than zlib's 8 KiB default, but no larger than the
    // file: zlib allocates three times this, for each file it opens.
    std::error_code unknown_size;
    const uintmax_t size = std::filesystem::file_size(path, unknown_size);
    gzbuffer(file_, unknown_size ? kChunkBytes
                                 : static_cast<unsigned>(std::clamp<uintmax_t>(
                                       size, kZlibDefaultBytes, kChunkBytes)));
  }
  ~GzipOrPlainFile() { gzclose(file_); }
  GzipOrPlainFile(const GzipOrPlainFile&) = delete;
  GzipOrPlainFile& operator=(const GzipOrPlainFile&) = delete;

  const std::string& name() const { return name_; }

  // Up to `size` bytes; fewer only where the file (or its compressed stream) ends.
  size_t read(uint8_t* out, unsigned size) {
    const int got = gzread(file_, out, size);
    if (got < 0) {
      int code = Z_OK;
      const char* message = gzerror(file_, &code);
      std::string_view detail = code == Z_ERRNO ? std::strerror(errno) : message;
      // zlib's own messages start with the path, which ours already names.
      const std::string path_prefix = name_ + ": ";
      if (detail.starts_with(path_prefix)) detail.remove_prefix(path_prefix.size());
      throw Error(fmt::format("{}: cannot read: {}", name_, detail));
    }
    return static_cast<size_t>(got);
  }

  // The buffer doubles as bytes arrive, from a small start: a small file
  // costs a small buffer, a large one a few reallocations.
  std::vector<uint8_t> read_to_end() {
    std::vector<uint8_t> bytes(kFirstBufferBytes);
    size_t size = 0;
    for (;;) {
      const auto want = static_cast<unsigned>(std::min<size_t>(bytes.size() - size, kChunkBytes));
      const size_t got = read(bytes.data() + size, want);
      size += got;
      if (got < want) break;
      if (size == bytes.size()) bytes.resize(2 * bytes.size());
    }
    bytes.resize(size);
    return bytes;
  }

 private:
  static constexpr unsigned kChunkBytes = 1u << 20;
  static constexpr size_t kFirstBufferBytes = 64u << 10;
  static constexpr uintmax_t kZlibDefaultBytes = 8u << 10;

  std::string name_;
  gzFile file_ = nullptr;
};

constexpr uint32_t kUnsignedByteType = 0x08;

uint32_t big_endian_u32(const uint8_t* bytes) {
  return static_cast<uint32_t>(bytes[0]) << 24 | static_cast<uint32_t>(bytes[1]) << 16 |
         static_cast<uint32_t>(bytes[2]) << 8 | static_cast<uint32_t>(bytes[3]);
}

// The dimension sizes and the data bytes of an IDX file of unsigned bytes
// with `rank` dimensions, checked against each other.
struct IdxContents {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

IdxContents read_idx(const std::filesystem::path& path, uint32_t rank, const char* what) {
  GzipOrPlainFile file(path);
  const std::string& name = file.name();

  std::vector<uint8_t> header(4 * (1 + rank));
  const size_t header_read = file.read(header.data(), static_cast<unsigned>(header.size()));
  REMAT_CHECK(header_read == header.size(),
              "{}: truncated IDX header: {} of the {} bytes an IDX {} header takes", name,
              header_read, header.size(), what);
  const uint32_t magic = big_endian_u32(header.data());
  const uint32_t expected_magic = kUnsignedByteType << 8 | rank;
  REMAT_CHECK(magic == expected_magic,
              "{}: wrong magic number for IDX {} (unsigned bytes, {} dimensions): expected "
              "0x{:08x}, found 0x{:08x}",
              name, what, rank, expected_magic, magic);

  IdxContents contents;
  uint64_t expected_bytes = 1;
  // The product of the sizes with zeros counted as ones: a tensor's strides
  // multiply up to it even when it holds no element.
  int64_t extent = 1;
  for (uint32_t d = 0; d < rank; ++d) {
    const uint32_t size = big_endian_u32(header.data() + 4 * (1 + d));
    REMAT_CHECK(!__builtin_mul_overflow(extent, std::max<int64_t>(size, 1), &extent),
                "{}: IDX header dimensions overflow 64 bits", name);
    expected_bytes *= size;
    contents.dims.push_back(size);
  }

  // Read what is there rather than allocating what the header claims, so a
  // corrupt header cannot ask for terabytes.
  contents.data = file.read_to_end();
  REMAT_CHECK(contents.data.size() >= expected_bytes,
              "{}: truncated: the header describes {} {} ({} bytes of data) but only {} bytes "
              "follow it",
              name, contents.dims[0], what, expected_bytes, contents.data.size());
  REMAT_CHECK(contents.data.size() == expected_bytes,
              "{}: unexpected data after the {} {} the header describes ({} extra bytes)", name,
              contents.dims[0], what, contents.data.size() - expected_bytes);
  return contents;
}

}  // namespace

Tensor read_idx_images(const std::filesystem::path& path, PixelScale scale) {
  const IdxContents idx = read_idx(path, 3, "images");
  Tensor images = Tensor::empty({idx.dims[0], 1, idx.dims[1], idx.dims[2]}, kFloat32);
  const float factor = scale == PixelScale::kUnit ? 1.0f / 255.0f : 1.0f;
  float* pixels = images.data<float>();
  for (size_t i = 0; i < idx.data.size(); ++i) pixels[i] = static_cast<float>(idx.data[i]) * factor;
  return images;
}

Tensor read_idx_labels(const std::filesystem::path& path, int64_t num_classes) {
  const IdxContents idx = read_idx(path, 1, "labels");
  Tensor labels = Tensor::empty({idx.dims[0]}, kInt64);
  int64_t* out = labels.data<int64_t>();
  for (size_t i = 0; i < idx.data.size(); ++i) {
    out[i] = idx.data[i];
    REMAT_CHECK(num_classes <= 0 || out[i] < num_classes,
                "{}: label {} at index {} is outside [0, {})", path.string(), out[i], i,
                num_classes);
  }
  return labels;
}

LabeledImages read_idx_dataset(const std::filesystem::path& images_path,
                               const std::filesystem::path& labels_path, PixelScale scale,
                               int64_t num_classes) {
  LabeledImages dataset{read_idx_images(images_path, scale),
                        read_idx_labels(labels_path, num_classes)};
  REMAT_CHECK(dataset.images.size(0) == dataset.labels.size(0),
              "{} holds {} images but {} holds {} labels", images_path.string(),
              dataset.images.size(0), labels_path.string(), dataset.labels.size(0));
  return dataset;
}

}  // namespace remat::data
