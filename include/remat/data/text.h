// Character-level text corpora: a byte vocabulary, token ids, a contiguous
// train/validation split and random (input, target) windows for next-byte
// prediction.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "remat/core/tensor.h"
#include "remat/data/batch.h"
#include "remat/data/random_stream.h"

namespace remat::data {

// Where Debian's fortunes package installs its fortune files.
inline constexpr std::string_view kFortunesDirectory = "/usr/share/games/fortunes";

// The distinct bytes of a text, sorted; a byte's id is its rank among them.
class Vocabulary {
 public:
  explicit Vocabulary(std::string_view text);

  int64_t size() const { return static_cast<int64_t>(symbols_.size()); }
  // The bytes in id order.
  const std::string& symbols() const { return symbols_; }
  bool contains(char symbol) const { return id_of_byte_[static_cast<uint8_t>(symbol)] >= 0; }
  int64_t id(char symbol) const;
  char symbol(int64_t id) const;
  // Throws at the first byte outside the vocabulary, naming it and its position.
  std::vector<int64_t> encode(std::string_view text) const;
  std::string decode(std::span<const int64_t> ids) const;

 private:
  std::string symbols_;
  std::array<int16_t, 256> id_of_byte_;  // -1 for bytes not in the text
};

struct TokenSplit {
  Tensor train;  // int64 [n_train], a view of the corpus tokens
  Tensor val;    // int64 [n_val], the tokens after train
};

class CharCorpus {
 public:
  // The vocabulary is the text's own bytes; the text must not be empty.
  explicit CharCorpus(std::string text);
  static CharCorpus from_file(const std::filesystem::path& path);
  // Concatenates, in file-name order, the regular files of `directory` (not
  // its subdirectories), following symlinks but skipping dangling ones and
  // names ending in .dat (strfile's binary indexes) or .u8 (Debian's aliases of
  // the same fortunes).
  static CharCorpus from_directory(const std::filesystem::path& directory = kFortunesDirectory);

  const std::string& text() const { return text_; }
  const Vocabulary& vocabulary() const { return vocabulary_; }
  // int64 [text().size()]: the id of every byte.
  const Tensor& tokens() const { return tokens_; }
  int64_t size() const { return tokens_.size(0); }
  // Contiguous, so no window straddles the two: the last round(val_fraction *
  // size()) tokens validate, the rest train. val_fraction in [0, 1).
  TokenSplit split(double val_fraction) const;

 private:
  std::string text_;
  Vocabulary vocabulary_;
  Tensor tokens_;
};

// Entropy in nats of the token frequencies in int64 [N] tokens: the loss of a
// model that ignores context, the baseline a character model must beat.
double unigram_entropy(const Tensor& tokens);

// batch_size windows of int64 [N] tokens starting at uniformly random
// positions drawn from `stream`: inputs [batch_size, context] are a window's
// first `context` tokens and targets the same window shifted by one.
Batch sample_windows(const Tensor& tokens, int64_t batch_size, int64_t context,
                     RandomStream& stream);

}  // namespace remat::data
