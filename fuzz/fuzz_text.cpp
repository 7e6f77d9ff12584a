// The text corpus reader on arbitrary files, then what a training run does
// with the corpus: encoding, the split, the unigram entropy and random
// windows, each checked against the text. The first byte picks the split.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz.h"
#include "remat/data/text.h"

using remat::fuzz::expect;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const remat::fuzz::InputFile file(".txt");
  const std::filesystem::path& path = file.write(data, size);
  const auto corpus =
      remat::fuzz::accepted([&] { return remat::data::CharCorpus::from_file(path); });
  if (!corpus) {
    expect(size == 0, "a {}-byte file refused", size);
    return 0;
  }
  const std::string& text = corpus->text();
  expect(text.size() == size && std::memcmp(text.data(), data, size) == 0,
         "the text differs from the file's {} bytes", size);
  const remat::data::Vocabulary& vocabulary = corpus->vocabulary();
  const std::vector<int64_t> ids = corpus->tokens().to_vector<int64_t>();
  expect(vocabulary.decode(ids) == text, "decoding the tokens does not give the text back");

  const remat::data::TokenSplit split = corpus->split(data[0] / 256.0);
  expect(split.train.numel() + split.val.numel() == corpus->size(), "the split loses tokens");

  const double entropy = remat::data::unigram_entropy(corpus->tokens());
  const double most = std::log(static_cast<double>(vocabulary.size()));
  expect(entropy >= -1e-12 && entropy <= most + 1e-9, "entropy {} outside [0, log {}]", entropy,
         vocabulary.size());

  const int64_t context = std::min<int64_t>(8, corpus->size() - 1);
  if (context > 0) {
    remat::data::RandomStream stream(size);
    const remat::data::Batch batch =
        remat::data::sample_windows(corpus->tokens(), 2, context, stream);
    const std::vector<int64_t> inputs = batch.inputs.to_vector<int64_t>();
    const std::vector<int64_t> targets = batch.targets.to_vector<int64_t>();
    for (size_t i = 0; i + 1 < inputs.size(); ++i) {
      if ((i + 1) % context != 0) {
        expect(targets[i] == inputs[i + 1], "targets are not the inputs shifted by one");
      }
    }
  }
  return 0;
}
