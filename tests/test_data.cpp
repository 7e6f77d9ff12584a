// Data layer: IDX reading (plain and gzip, corrupt files), Fashion-MNIST file
// discovery, character corpora, and the shuffling loader.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "remat/data/data.h"
#include "remat/remat.h"

using namespace remat;
using namespace remat::data;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test, removed afterwards.
class DataFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() /
        fmt::format("remat_test_data_{}_{}_{}", test->test_suite_name(), test->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path path(const std::string& name) const { return dir_ / name; }

  fs::path write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::ofstream out(path(name), std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    return path(name);
  }

  fs::path write_text(const std::string& name, const std::string& text) const {
    return write(name, std::vector<uint8_t>(text.begin(), text.end()));
  }

  fs::path write_gzip(const std::string& name, const std::vector<uint8_t>& bytes) const {
    gzFile file = gzopen(path(name).c_str(), "wb");
    EXPECT_NE(file, nullptr);
    EXPECT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    gzclose(file);
    return path(name);
  }

  fs::path dir_;
};

void append_big_endian(std::vector<uint8_t>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

// An IDX file of unsigned bytes: magic 0x0000 0x08 <rank>, the sizes, the data.
std::vector<uint8_t> idx_file(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes;
  append_big_endian(bytes, 0x0800u | static_cast<uint32_t>(dims.size()));
  for (uint32_t d : dims) append_big_endian(bytes, d);
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

// Three 2x4 images (not square, so swapped rows and columns would show) whose
// pixels count up in steps of 10.
std::vector<uint8_t> image_pixels() {
  std::vector<uint8_t> pixels(3 * 2 * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(10 * i + 5);
  return pixels;
}
std::vector<uint8_t> image_file() { return idx_file({3, 2, 4}, image_pixels()); }

// 300 labels: a count above 255 checks the header is read big-endian.
std::vector<uint8_t> label_values(size_t count = 300) {
  std::vector<uint8_t> labels(count);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i % 10);
  return labels;
}
std::vector<uint8_t> label_file(size_t count = 300) {
  return idx_file({static_cast<uint32_t>(count)}, label_values(count));
}

// The message of the remat::Error that `fn` throws; checks it mentions every
// fragment.
template <typename Fn>
void expect_error_mentioning(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no remat::Error thrown";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "message \"" << message << "\" lacks \"" << fragment << "\"";
    }
  }
}

std::vector<int64_t> row(const Tensor& t, int64_t r) {
  return t.slice(0, r, r + 1).reshape({-1}).to_vector<int64_t>();
}

}  // namespace

// --- IDX ---------------------------------------------------------------------

TEST_F(DataFiles, IdxImagesScaleToUnitOrStayRaw) {
  const fs::path file = write("images", image_file());
  Tensor unit = read_idx_images(file);
  EXPECT_EQ(unit.shape(), (Shape{3, 1, 2, 4}));
  EXPECT_EQ(unit.dtype(), kFloat32);
  Tensor raw = read_idx_images(file, PixelScale::kRaw);
  std::vector<float> unit_values = unit.to_vector<float>();
  std::vector<float> raw_values = raw.to_vector<float>();
  const std::vector<uint8_t> pixels = image_pixels();
  ASSERT_EQ(unit_values.size(), pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) {
    EXPECT_FLOAT_EQ(raw_values[i], pixels[i]);
    EXPECT_FLOAT_EQ(unit_values[i], pixels[i] / 255.0f);
  }
}

TEST_F(DataFiles, IdxLabelsReadBigEndianCounts) {
  Tensor labels = read_idx_labels(write("labels", label_file()));
  EXPECT_EQ(labels.shape(), (Shape{300}));
  EXPECT_EQ(labels.dtype(), kInt64);
  const std::vector<uint8_t> expected = label_values();
  EXPECT_EQ(labels.to_vector<int64_t>(), std::vector<int64_t>(expected.begin(), expected.end()));
}

TEST_F(DataFiles, IdxGzipReadsTheSameAsPlain) {
  Tensor plain = read_idx_images(write("images", image_file()));
  Tensor inflated = read_idx_images(write_gzip("images.gz", image_file()));
  EXPECT_EQ(inflated.to_vector<float>(), plain.to_vector<float>());
  EXPECT_EQ(read_idx_labels(write_gzip("labels.gz", label_file())).to_vector<int64_t>(),
            read_idx_labels(write("labels", label_file())).to_vector<int64_t>());
}

TEST_F(DataFiles, IdxMissingFileIsNamed) {
  const fs::path missing = path("no-such-images");
  expect_error_mentioning([&] { read_idx_images(missing); }, {missing.string(), "No such file"});
}

TEST_F(DataFiles, IdxTruncatedHeaderIsNamed) {
  std::vector<uint8_t> bytes = image_file();
  bytes.resize(10);  // magic, count and half of rows
  const fs::path file = write("images", bytes);
  expect_error_mentioning([&] { read_idx_images(file); },
                          {file.string(), "truncated IDX header", "10 of the 16 bytes"});
}

TEST_F(DataFiles, IdxTruncatedDataIsNamed) {
  std::vector<uint8_t> bytes = image_file();
  bytes.pop_back();
  const fs::path file = write("images", bytes);
  expect_error_mentioning([&] { read_idx_images(file); },
                          {file.string(), "truncated", "3 images", "24 bytes", "only 23"});
}

TEST_F(DataFiles, IdxTruncatedGzipIsAnErrorNotACrash) {
  const fs::path whole = write_gzip("whole.gz", image_file());
  std::ifstream in(whole, std::ios::binary);
  std::vector<uint8_t> compressed((std::istreambuf_iterator<char>(in)), {});
  compressed.resize(compressed.size() / 2);
  const fs::path file = write("images.gz", compressed);
  expect_error_mentioning([&] { read_idx_images(file); }, {file.string()});
}

TEST_F(DataFiles, IdxTrailingBytesAreRefused) {
  std::vector<uint8_t> bytes = label_file();
  bytes.push_back(0);
  const fs::path file = write("labels", bytes);
  expect_error_mentioning([&] { read_idx_labels(file); },
                          {file.string(), "unexpected data after the 300 labels", "1 extra bytes"});
}

TEST_F(DataFiles, IdxWrongMagicSaysExpectedAndFound) {
  const fs::path labels = write("labels", label_file());
  expect_error_mentioning([&] { read_idx_images(labels); },
                          {labels.string(), "expected 0x00000803, found 0x00000801"});
  const fs::path text = write_text("notes.txt", "these are not the bytes you are looking for");
  expect_error_mentioning([&] { read_idx_labels(text); },
                          {text.string(), "wrong magic number", "expected 0x00000801"});
}

// The reader's buffer starts at 64 KiB and doubles: sizes at and around the
// boundaries, plain and compressed, read back whole.
TEST_F(DataFiles, IdxReadsFilesAcrossBufferGrowth) {
  for (size_t count : {size_t{65536}, size_t{65537}, size_t{200000}}) {
    SCOPED_TRACE(count);
    const std::vector<uint8_t> expected = label_values(count);
    const std::vector<int64_t> values(expected.begin(), expected.end());
    EXPECT_EQ(read_idx_labels(write("labels", label_file(count))).to_vector<int64_t>(), values);
    EXPECT_EQ(read_idx_labels(write_gzip("labels.gz", label_file(count))).to_vector<int64_t>(),
              values);
  }
}

// No image, but rows x cols past int64: the tensor's strides could not hold
// them. The error names the file.
TEST_F(DataFiles, IdxEmptyImagesWithOverflowingDimensionsAreRefused) {
  const fs::path file = write("images", idx_file({0, 0xffffffffu, 0xffffffffu}, {}));
  expect_error_mentioning([&] { read_idx_images(file); },
                          {file.string(), "dimensions overflow 64 bits"});
  EXPECT_EQ(read_idx_images(write("empty", idx_file({0, 28, 28}, {}))).shape(),
            (Shape{0, 1, 28, 28}));
}

TEST_F(DataFiles, IdxLabelOutOfRangeIsNamed) {
  const fs::path file = write("labels", idx_file({4}, {1, 2, 12, 3}));
  EXPECT_EQ(read_idx_labels(file).to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 12, 3}));
  expect_error_mentioning([&] { read_idx_labels(file, 10); },
                          {file.string(), "label 12 at index 2", "[0, 10)"});
}

TEST_F(DataFiles, IdxDatasetCountMismatchNamesBothFiles) {
  const fs::path images = write("images", image_file());
  const fs::path labels = write("labels", label_file(2));
  expect_error_mentioning([&] { read_idx_dataset(images, labels); },
                          {images.string(), "3 images", labels.string(), "2 labels"});
  LabeledImages dataset = read_idx_dataset(images, write("labels3", label_file(3)));
  EXPECT_EQ(dataset.size(), 3);
}

// --- Fashion-MNIST -----------------------------------------------------------

TEST_F(DataFiles, FashionMnistFindsStandardNamesPlainOrGzip) {
  write("train-images-idx3-ubyte", image_file());
  write_gzip("train-labels-idx1-ubyte.gz", label_file(3));
  LabeledImages train = fashion_mnist::load("train", {.directory = dir_});
  EXPECT_EQ(train.images.shape(), (Shape{3, 1, 2, 4}));
  EXPECT_EQ(train.labels.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_FLOAT_EQ(train.images.to_vector<float>()[0], 5.0f / 255.0f);

  LabeledImages normalized = fashion_mnist::load("train", {.directory = dir_, .normalize = true});
  EXPECT_NEAR(normalized.images.to_vector<float>()[0],
              (5.0 / 255.0 - fashion_mnist::kMean) / fashion_mnist::kStd, 1e-6);

  // The test split's files are absent: the error names them and the remedies.
  expect_error_mentioning(
      [&] { fashion_mnist::load("test", {.directory = dir_}); },
      {path("t10k-images-idx3-ubyte").string(), path("t10k-images-idx3-ubyte.gz").string(),
       fashion_mnist::kDirectoryEnvVar});
  expect_error_mentioning([&] { fashion_mnist::load("validation", {.directory = dir_}); },
                          {"\"validation\""});
}

TEST_F(DataFiles, FashionMnistDirectoryFromEnvironment) {
  write("t10k-images-idx3-ubyte", image_file());
  write("t10k-labels-idx1-ubyte", idx_file({3}, {7, 8, 11}));
  ASSERT_EQ(::setenv(fashion_mnist::kDirectoryEnvVar, dir_.c_str(), 1), 0);
  EXPECT_EQ(fashion_mnist::default_directory(), dir_);
  // Label 11 is no Fashion-MNIST class.
  expect_error_mentioning([&] { fashion_mnist::load("test"); },
                          {path("t10k-labels-idx1-ubyte").string(), "label 11 at index 2"});
  ::unsetenv(fashion_mnist::kDirectoryEnvVar);
  EXPECT_EQ(fashion_mnist::default_directory(), fs::path(fashion_mnist::kDefaultDirectory));
}

TEST(FashionMnist, InstalledDatasetHasTheKnownStatistics) {
  const fs::path directory = fashion_mnist::kDefaultDirectory;
  if (!fs::exists(directory / "train-labels-idx1-ubyte.gz") &&
      !fs::exists(directory / "train-labels-idx1-ubyte")) {
    GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed";
  }
  LabeledImages train = fashion_mnist::load("train", {.directory = directory});
  EXPECT_EQ(train.images.shape(), (Shape{60000, 1, 28, 28}));
  std::vector<int64_t> per_class(fashion_mnist::kNumClasses);
  for (int64_t label : train.labels.to_vector<int64_t>()) ++per_class[label];
  EXPECT_EQ(per_class, std::vector<int64_t>(fashion_mnist::kNumClasses, 6000));
  EXPECT_NEAR(mean(train.images).item<float>(), fashion_mnist::kMean, 1e-3);

  LabeledImages test = fashion_mnist::load("test", {.directory = directory, .normalize = true});
  EXPECT_EQ(test.size(), 10000);
  EXPECT_NEAR(mean(test.images).item<float>(), 0.0, 0.02);
}

// --- Character corpora -------------------------------------------------------

TEST(Vocabulary, SortedUniqueBytesRoundTrip) {
  Vocabulary vocabulary("hello world");
  EXPECT_EQ(vocabulary.symbols(), " dehlorw");
  EXPECT_EQ(vocabulary.size(), 8);
  EXPECT_EQ(vocabulary.id(' '), 0);
  EXPECT_EQ(vocabulary.id('w'), 7);
  EXPECT_EQ(vocabulary.symbol(3), 'h');
  const std::vector<int64_t> ids = vocabulary.encode("world hello");
  EXPECT_EQ(ids, (std::vector<int64_t>{7, 5, 6, 4, 1, 0, 3, 2, 4, 4, 5}));
  EXPECT_EQ(vocabulary.decode(ids), "world hello");
  EXPECT_FALSE(vocabulary.contains('z'));
  expect_error_mentioning([&] { vocabulary.encode("hewzo"); }, {"0x7a 'z'", "position 3"});
  expect_error_mentioning([&] { vocabulary.decode(std::vector<int64_t>{8}); }, {"id 8"});
}

TEST(CharCorpus, SplitIsContiguousWithValidationLast) {
  std::string text;
  for (int i = 0; i < 10; ++i) text += "0123456789";
  CharCorpus corpus(text);
  EXPECT_EQ(corpus.size(), 100);
  TokenSplit split = corpus.split(0.15);
  EXPECT_EQ(split.train.numel(), 85);
  EXPECT_EQ(split.val.numel(), 15);
  EXPECT_TRUE(split.val.is_alias_of(corpus.tokens()));
  EXPECT_EQ(corpus.vocabulary().decode(split.val.to_vector<int64_t>()), text.substr(85));
  EXPECT_EQ(corpus.vocabulary().decode(split.train.to_vector<int64_t>()), text.substr(0, 85));
  // The only window of 14 + 1 tokens in the validation part is all of it.
  RandomStream stream(0);
  Batch window = sample_windows(split.val, 1, 14, stream);
  EXPECT_EQ(corpus.vocabulary().decode(window.inputs.to_vector<int64_t>()), text.substr(85, 14));
  EXPECT_EQ(corpus.vocabulary().decode(window.targets.to_vector<int64_t>()), text.substr(86, 14));
  EXPECT_EQ(corpus.split(0.0).val.numel(), 0);
  EXPECT_THROW(corpus.split(1.0), Error);
}

TEST(CharCorpus, UnigramEntropyInNats) {
  EXPECT_NEAR(unigram_entropy(CharCorpus("aabb").tokens()), std::log(2.0), 1e-12);
  EXPECT_NEAR(unigram_entropy(CharCorpus("abcdabcdabcd").tokens()), std::log(4.0), 1e-12);
  EXPECT_NEAR(unigram_entropy(CharCorpus("aaab").tokens()),
              -(0.75 * std::log(0.75) + 0.25 * std::log(0.25)), 1e-12);
  EXPECT_EQ(unigram_entropy(CharCorpus("zzzz").tokens()), 0.0);
}

TEST(CharCorpus, WindowsAreTextWithTargetsShiftedByOne) {
  const std::string text = "the quick brown fox";
  CharCorpus corpus(text);
  const int64_t context = 5;
  RandomStream stream(3);
  std::set<size_t> starts;
  for (int draw = 0; draw < 50; ++draw) {
    Batch batch = sample_windows(corpus.tokens(), 8, context, stream);
    ASSERT_EQ(batch.inputs.shape(), (Shape{8, context}));
    ASSERT_EQ(batch.targets.shape(), (Shape{8, context}));
    for (int64_t b = 0; b < 8; ++b) {
      const std::string input = corpus.vocabulary().decode(row(batch.inputs, b));
      const std::string target = corpus.vocabulary().decode(row(batch.targets, b));
      EXPECT_EQ(input.substr(1), target.substr(0, context - 1));
      const size_t start = text.find(input + target.back());
      ASSERT_NE(start, std::string::npos) << input << " | " << target;
      starts.insert(start);
    }
  }
  // Every window position occurs, the first and the last included.
  EXPECT_EQ(starts.size(), text.size() - context);
  EXPECT_EQ(*starts.rbegin(), text.size() - context - 1);
}

TEST(CharCorpus, SameSeedSameWindows) {
  CharCorpus corpus("It was the best of times, it was the worst of times.");
  RandomStream a(7), b(7), c(8);
  for (int draw = 0; draw < 3; ++draw) {
    Batch from_a = sample_windows(corpus.tokens(), 4, 6, a);
    Batch from_b = sample_windows(corpus.tokens(), 4, 6, b);
    Batch from_c = sample_windows(corpus.tokens(), 4, 6, c);
    EXPECT_EQ(from_a.inputs.to_vector<int64_t>(), from_b.inputs.to_vector<int64_t>());
    EXPECT_NE(from_a.inputs.to_vector<int64_t>(), from_c.inputs.to_vector<int64_t>());
  }
  manual_seed(1);  // the default generator does not drive the windows
  RandomStream again(7);
  RandomStream reference(7);
  manual_seed(2);
  EXPECT_EQ(sample_windows(corpus.tokens(), 4, 6, again).inputs.to_vector<int64_t>(),
            sample_windows(corpus.tokens(), 4, 6, reference).inputs.to_vector<int64_t>());
}

TEST(CharCorpus, WindowsMustFit) {
  CharCorpus corpus("abcde");
  RandomStream stream(0);
  EXPECT_NO_THROW(sample_windows(corpus.tokens(), 2, 4, stream));
  expect_error_mentioning([&] { sample_windows(corpus.tokens(), 2, 5, stream); },
                          {"5 + 1 tokens", "in 5 tokens"});
  expect_error_mentioning([&] { sample_windows(corpus.split(0.4).val, 1, 2, stream); },
                          {"in 2 tokens"});
  expect_error_mentioning([&] { sample_windows(zeros({5}), 1, 2, stream); }, {"int64"});
  EXPECT_THROW(CharCorpus(""), Error);
}

TEST_F(DataFiles, CorpusFromFile) {
  CharCorpus corpus = CharCorpus::from_file(write_text("story.txt", "once upon a time\n"));
  EXPECT_EQ(corpus.text(), "once upon a time\n");
  EXPECT_EQ(corpus.vocabulary().symbols(), "\n aceimnoptu");
  expect_error_mentioning([&] { CharCorpus::from_file(path("absent.txt")); },
                          {path("absent.txt").string(), "no such file"});
  const fs::path empty = write_text("empty.txt", "");
  expect_error_mentioning([&] { CharCorpus::from_file(empty); }, {empty.string(), "empty"});
}

TEST_F(DataFiles, CorpusFromFortuneStyleDirectory) {
  write_text("b-wisdom", "Look before you leap.\n%\n");
  write_text("a-work", "Work expands.\n%\n");
  write("a-work.dat", {0, 0, 0, 2, 0, 0, 0, 1});  // strfile index: binary
  fs::create_symlink("a-work", path("a-work.u8"));
  fs::create_symlink("vanished", path("dangling"));
  fs::create_directory(path("off"));
  write_text("off/rude", "not read\n");
  CharCorpus corpus = CharCorpus::from_directory(dir_);
  EXPECT_EQ(corpus.text(), "Work expands.\n%\nLook before you leap.\n%\n");

  expect_error_mentioning([&] { CharCorpus::from_directory(path("off/rude")); },
                          {path("off/rude").string()});
  fs::create_directory(path("blank"));
  expect_error_mentioning([&] { CharCorpus::from_directory(path("blank")); },
                          {path("blank").string(), "no text"});
}

TEST(CharCorpus, InstalledFortunesAreText) {
  if (!fs::is_directory(kFortunesDirectory)) {
    GTEST_SKIP() << "Debian's fortunes package is not installed";
  }
  CharCorpus corpus = CharCorpus::from_directory();
  // The strfile indexes (.dat) are full of zero bytes; none may leak in.
  EXPECT_EQ(corpus.text().find('\0'), std::string::npos);
  EXPECT_GT(corpus.size(), 100000);
  EXPECT_GT(corpus.vocabulary().size(), 60);
  const double entropy = unigram_entropy(corpus.tokens());
  EXPECT_GT(entropy, 2.5);  // English text: about 3 nats per byte
  EXPECT_LT(entropy, std::log(static_cast<double>(corpus.vocabulary().size())));
}

// --- Random stream and loader ------------------------------------------------

TEST(RandomStream, UniformIndexIsInRangeAndEven) {
  RandomStream stream(11);
  std::vector<int64_t> counts(6);
  for (int draw = 0; draw < 60000; ++draw) {
    const int64_t index = stream.uniform_index(6);
    ASSERT_GE(index, 0);
    ASSERT_LT(index, 6);
    ++counts[index];
  }
  for (int64_t count : counts) EXPECT_NEAR(count, 10000, 400);
  EXPECT_EQ(stream.uniform_index(1), 0);
  EXPECT_THROW(stream.uniform_index(0), Error);
}

TEST(RandomStream, SeedAndStreamSelectTheNumbers) {
  RandomStream a(5), b(5), other_seed(6), other_stream(5, 1);
  const uint64_t first = a.next();
  EXPECT_EQ(first, b.next());
  EXPECT_NE(first, other_seed.next());
  EXPECT_NE(first, other_stream.next());
  EXPECT_NE(first, a.next());
}

namespace {

// Sample i: inputs row (i, i + 0.5, -i), target i.
DataLoader numbered_loader(int64_t n, LoaderOptions options) {
  std::vector<float> inputs;
  std::vector<int64_t> targets;
  for (int64_t i = 0; i < n; ++i) {
    inputs.insert(inputs.end(), {static_cast<float>(i), i + 0.5f, -static_cast<float>(i)});
    targets.push_back(i);
  }
  return DataLoader(from_vector(inputs, {n, 3}), from_vector(targets, {n}), options);
}

// The targets of each batch of an epoch, checking each input row matches its target.
std::vector<std::vector<int64_t>> epoch_targets(const DataLoader& loader, int64_t epoch) {
  std::vector<std::vector<int64_t>> batches;
  for (const Batch& batch : loader.epoch(epoch)) {
    const std::vector<int64_t> targets = batch.targets.to_vector<int64_t>();
    const std::vector<float> inputs = batch.inputs.to_vector<float>();
    EXPECT_EQ(batch.inputs.size(0), static_cast<int64_t>(targets.size()));
    for (size_t j = 0; j < targets.size(); ++j) {
      const auto i = static_cast<float>(targets[j]);
      EXPECT_EQ(inputs[3 * j], i);
      EXPECT_EQ(inputs[3 * j + 1], i + 0.5f);
      EXPECT_EQ(inputs[3 * j + 2], -i);
    }
    batches.push_back(targets);
  }
  return batches;
}

std::vector<int64_t> flatten(const std::vector<std::vector<int64_t>>& batches) {
  std::vector<int64_t> all;
  for (const auto& batch : batches) all.insert(all.end(), batch.begin(), batch.end());
  return all;
}

}  // namespace

TEST(DataLoader, EveryEpochVisitsEverySampleOnce) {
  DataLoader loader = numbered_loader(10, {.batch_size = 3, .seed = 42});
  EXPECT_EQ(loader.num_batches(), 4);
  std::vector<int64_t> identity(10);
  std::iota(identity.begin(), identity.end(), 0);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto batches = epoch_targets(loader, epoch);
    ASSERT_EQ(batches.size(), 4u);
    EXPECT_EQ(batches.back().size(), 1u);
    std::vector<int64_t> seen = flatten(batches);
    EXPECT_NE(seen, identity) << "epoch " << epoch << " is not shuffled";
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, identity);
  }
}

TEST(DataLoader, OrderIsAFunctionOfSeedAndEpoch) {
  DataLoader loader = numbered_loader(50, {.batch_size = 8, .seed = 1});
  DataLoader twin = numbered_loader(50, {.batch_size = 8, .seed = 1});
  DataLoader other = numbered_loader(50, {.batch_size = 8, .seed = 2});
  EXPECT_EQ(epoch_targets(loader, 3), epoch_targets(twin, 3));
  EXPECT_EQ(loader.order(0), twin.order(0));
  EXPECT_NE(loader.order(0), loader.order(1));
  EXPECT_NE(loader.order(0), other.order(0));
  manual_seed(99);  // the default generator does not drive the order
  EXPECT_EQ(loader.order(5), twin.order(5));
}

TEST(DataLoader, ReplicasShareOneShuffledOrderDisjointly) {
  // 11 samples over 3 replicas: 4 each, the 12th slot wrapping to the first.
  const LoaderOptions options{.batch_size = 3, .seed = 7, .num_replicas = 3};
  const DataLoader whole = numbered_loader(11, {.batch_size = 3, .seed = 7});
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const std::vector<int64_t> global = whole.order(epoch);
    std::vector<int64_t> seen;
    for (int64_t rank = 0; rank < 3; ++rank) {
      LoaderOptions mine = options;
      mine.rank = rank;
      const DataLoader replica = numbered_loader(11, mine);
      EXPECT_EQ(replica.samples_per_epoch(), 4);
      EXPECT_EQ(replica.num_batches(), 2);
      const std::vector<int64_t> share = flatten(epoch_targets(replica, epoch));
      ASSERT_EQ(share.size(), 4u);
      for (size_t i = 0; i < share.size(); ++i) {
        EXPECT_EQ(share[i], global[(3 * i + static_cast<size_t>(rank)) % 11]);
      }
      seen.insert(seen.end(), share.begin(), share.end());
    }
    // Every sample once, and one (the order's first) twice.
    std::multiset<int64_t> counts(seen.begin(), seen.end());
    for (int64_t i = 0; i < 11; ++i) {
      EXPECT_EQ(counts.count(i), i == global[0] ? 2u : 1u) << "sample " << i;
    }
  }
  LoaderOptions second = options;
  second.rank = 1;
  EXPECT_NE(numbered_loader(11, second).order(0), numbered_loader(11, second).order(1));
}

TEST(DataLoader, ReplicaRankOutsideTheReplicasIsAnError) {
  expect_error_mentioning([] { numbered_loader(4, {.num_replicas = 2, .rank = 2}); },
                          {"DataLoader", "rank", "[0, num_replicas)", "rank 2 of 2"});
  expect_error_mentioning([] { numbered_loader(0, {.num_replicas = 2}); },
                          {"DataLoader", "no samples", "2 replicas"});
}

TEST(DataLoader, DropLastKeepsOnlyFullBatches) {
  DataLoader loader = numbered_loader(10, {.batch_size = 3, .seed = 4, .drop_last = true});
  EXPECT_EQ(loader.num_batches(), 3);
  const auto batches = epoch_targets(loader, 0);
  ASSERT_EQ(batches.size(), 3u);
  std::set<int64_t> seen;
  for (const auto& batch : batches) {
    EXPECT_EQ(batch.size(), 3u);
    seen.insert(batch.begin(), batch.end());
  }
  EXPECT_EQ(seen.size(), 9u);
  EXPECT_EQ(numbered_loader(2, {.batch_size = 3, .drop_last = true}).num_batches(), 0);
}

TEST(DataLoader, WithoutShuffleInOrder) {
  DataLoader loader = numbered_loader(5, {.batch_size = 2, .shuffle = false});
  EXPECT_EQ(epoch_targets(loader, 7), (std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}, {4}}));
}

TEST(DataLoader, GathersFromNonContiguousInputs) {
  // Columns of a [3, 4] matrix as 4 samples of 3 features.
  Tensor matrix = arange(0.0, 12.0, 1.0, kFloat32).reshape({3, 4});
  DataLoader loader(matrix.transpose(0, 1), arange(4), {.batch_size = 4, .shuffle = false});
  Batch batch = loader.gather(std::vector<int64_t>{2, 0});
  EXPECT_EQ(batch.inputs.shape(), (Shape{2, 3}));
  EXPECT_TRUE(batch.inputs.is_contiguous());
  EXPECT_EQ(batch.inputs.to_vector<float>(), (std::vector<float>{2, 6, 10, 0, 4, 8}));
  EXPECT_EQ(batch.targets.to_vector<int64_t>(), (std::vector<int64_t>{2, 0}));
  expect_error_mentioning([&] { loader.gather(std::vector<int64_t>{4}); }, {"sample 4"});
}

TEST(DataLoader, RefusesMismatchedOrEmptyBatches) {
  expect_error_mentioning(
      [] {
        DataLoader(zeros({4, 2}), zeros({3}));
      },
      {"4 inputs but 3 targets"});
  expect_error_mentioning(
      [] {
        DataLoader(zeros({4, 2}), zeros({4}), {.batch_size = 0});
      },
      {"batch_size"});
  expect_error_mentioning([] { DataLoader(zeros({}), zeros({})); }, {"sample dimension"});
}
