#include "remat/data/text.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>
#include <unordered_map>
#include <utility>

namespace remat::data {
namespace {

std::string describe_byte(char byte) {
  const auto value = static_cast<uint8_t>(byte);
  return std::isprint(value) ? fmt::format("0x{:02x} '{}'", value, byte)
                             : fmt::format("0x{:02x}", value);
}

std::string read_file(const std::filesystem::path& path) {
  // The non-throwing overloads: a path whose status cannot be read counts as absent.
  std::error_code unreadable_status;
  REMAT_CHECK(std::filesystem::exists(path, unreadable_status), "{}: no such file", path.string());
  REMAT_CHECK(std::filesystem::is_regular_file(path, unreadable_status), "{}: not a regular file",
              path.string());
  std::ifstream in(path, std::ios::binary);
  REMAT_CHECK(in.is_open(), "{}: cannot open: {}", path.string(), std::strerror(errno));
  std::ostringstream contents;
  contents << in.rdbuf();
  REMAT_CHECK(!in.bad(), "{}: cannot read: {}", path.string(), std::strerror(errno));
  return std::move(contents).str();
}

// The files from_directory reads, in name order.
std::vector<std::filesystem::path> corpus_files(const std::filesystem::path& directory) {
  std::vector<std::filesystem::path> files;
  try {
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      const std::string extension = entry.path().extension().string();
      // is_regular_file follows symlinks: false for dangling ones and directories.
      if (entry.is_regular_file() && extension != ".dat" && extension != ".u8") {
        files.push_back(entry.path());
      }
    }
  } catch (const std::filesystem::filesystem_error& e) {
    throw Error(fmt::format("{}: cannot list: {}", directory.string(), e.code().message()));
  }
  std::sort(files.begin(), files.end());
  return files;
}

const int64_t* token_data(const Tensor& tokens, const char* caller) {
  REMAT_CHECK(tokens.dim() == 1 && tokens.dtype() == kInt64 && tokens.device() == kCPU &&
                  tokens.is_contiguous(),
              "{}: tokens must be a contiguous int64 [N] cpu tensor, got {}", caller,
              TensorMeta::of(tokens).str());
  return tokens.data<int64_t>();
}

}  // namespace

Vocabulary::Vocabulary(std::string_view text) {
  std::array<bool, 256> present{};
  for (char c : text) present[static_cast<uint8_t>(c)] = true;
  id_of_byte_.fill(-1);
  for (int byte = 0; byte < 256; ++byte) {
    if (!present[byte]) continue;
    id_of_byte_[byte] = static_cast<int16_t>(symbols_.size());
    symbols_.push_back(static_cast<char>(byte));
  }
}

int64_t Vocabulary::id(char symbol) const {
  REMAT_CHECK(contains(symbol), "Vocabulary: byte {} is not among its {} symbols",
              describe_byte(symbol), size());
  return id_of_byte_[static_cast<uint8_t>(symbol)];
}

char Vocabulary::symbol(int64_t id) const {
  REMAT_CHECK(id >= 0 && id < size(), "Vocabulary: id {} is outside [0, {})", id, size());
  return symbols_[static_cast<size_t>(id)];
}

std::vector<int64_t> Vocabulary::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    REMAT_CHECK(contains(text[i]),
                "Vocabulary::encode: byte {} at position {} is not among its {} symbols",
                describe_byte(text[i]), i, size());
    ids.push_back(id_of_byte_[static_cast<uint8_t>(text[i])]);
  }
  return ids;
}

std::string Vocabulary::decode(std::span<const int64_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int64_t id : ids) text.push_back(symbol(id));
  return text;
}

CharCorpus::CharCorpus(std::string text) : text_(std::move(text)), vocabulary_(text_) {
  REMAT_CHECK(!text_.empty(), "CharCorpus: the text is empty");
  const std::vector<int64_t> ids = vocabulary_.encode(text_);
  tokens_ = from_vector(ids, {static_cast<int64_t>(ids.size())});
}

CharCorpus CharCorpus::from_file(const std::filesystem::path& path) {
  std::string text = read_file(path);
  REMAT_CHECK(!text.empty(), "{}: empty file", path.string());
  return CharCorpus(std::move(text));
}

CharCorpus CharCorpus::from_directory(const std::filesystem::path& directory) {
  const std::vector<std::filesystem::path> files = corpus_files(directory);
  std::string text;
  for (const auto& file : files) text += read_file(file);
  REMAT_CHECK(!text.empty(), "{}: no text in its {} corpus files (.dat and .u8 are skipped)",
              directory.string(), files.size());
  return CharCorpus(std::move(text));
}

TokenSplit CharCorpus::split(double val_fraction) const {
  REMAT_CHECK(val_fraction >= 0.0 && val_fraction < 1.0,
              "CharCorpus::split: val_fraction must be in [0, 1), got {}", val_fraction);
  const int64_t n_val = std::llround(val_fraction * static_cast<double>(size()));
  const int64_t n_train = size() - n_val;
  return {tokens_.slice(0, 0, n_train), tokens_.slice(0, n_train, size())};
}

double unigram_entropy(const Tensor& tokens) {
  const int64_t* ids = token_data(tokens, "unigram_entropy");
  const int64_t n = tokens.numel();
  REMAT_CHECK(n > 0, "unigram_entropy: no tokens");
  std::unordered_map<int64_t, int64_t> counts;
  for (int64_t i = 0; i < n; ++i) ++counts[ids[i]];
  double entropy = 0.0;
  for (const auto& [id, count] : counts) {
    const double p = static_cast<double>(count) / static_cast<double>(n);
    entropy -= p * std::log(p);
  }
  return entropy;
}

Batch sample_windows(const Tensor& tokens, int64_t batch_size, int64_t context,
                     RandomStream& stream) {
  const int64_t* ids = token_data(tokens, "sample_windows");
  REMAT_CHECK(batch_size > 0 && context > 0,
              "sample_windows: batch_size and context must be positive, got {} and {}", batch_size,
              context);
  const int64_t n = tokens.numel();
  REMAT_CHECK(n > context, "sample_windows: a window of {} + 1 tokens does not fit in {} tokens",
              context, n);
  Batch batch{Tensor::empty({batch_size, context}, kInt64),
              Tensor::empty({batch_size, context}, kInt64)};
  int64_t* inputs = batch.inputs.data<int64_t>();
  int64_t* targets = batch.targets.data<int64_t>();
  const auto row_bytes = static_cast<size_t>(context) * sizeof(int64_t);
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t start = stream.uniform_index(n - context);
    std::memcpy(inputs + b * context, ids + start, row_bytes);
    std::memcpy(targets + b * context, ids + start + 1, row_bytes);
  }
  return batch;
}

}  // namespace remat::data
