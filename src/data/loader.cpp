#include "remat/data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>

#include "remat/data/random_stream.h"

namespace remat::data {
namespace {

// A CPU tensor whose first dimension indexes samples, as contiguous rows.
Tensor as_sample_rows(const Tensor& t, const char* what) {
  REMAT_CHECK(t.defined() && t.dim() >= 1, "DataLoader: {} must have a sample dimension", what);
  REMAT_CHECK(t.device() == kCPU,
              "DataLoader: {} must be on the cpu, got {} (move each batch instead)", what,
              t.device());
  return t.contiguous();
}

// rows[indices[i]] copied to row i of a new tensor.
Tensor gather_rows(const Tensor& rows, std::span<const int64_t> indices) {
  Shape shape = rows.shape();
  shape[0] = static_cast<int64_t>(indices.size());
  Tensor out = Tensor::empty(shape, rows.dtype());
  const size_t row_bytes =
      rows.size(0) == 0 ? 0 : static_cast<size_t>(rows.nbytes() / rows.size(0));
  const auto* source = static_cast<const std::byte*>(rows.data_ptr());
  auto* destination = static_cast<std::byte*>(out.data_ptr());
  for (size_t i = 0; i < indices.size(); ++i) {
    std::memcpy(destination + i * row_bytes, source + indices[i] * row_bytes, row_bytes);
  }
  return out;
}

}  // namespace

DataLoader::DataLoader(const Tensor& inputs, const Tensor& targets, LoaderOptions options)
    : inputs_(as_sample_rows(inputs, "inputs")),
      targets_(as_sample_rows(targets, "targets")),
      options_(options) {
  REMAT_CHECK(inputs_.size(0) == targets_.size(0),
              "DataLoader: {} inputs but {} targets (shapes {} and {})", inputs_.size(0),
              targets_.size(0), shape_str(inputs_.shape()), shape_str(targets_.shape()));
  REMAT_CHECK(options_.batch_size > 0, "DataLoader: batch_size must be positive, got {}",
              options_.batch_size);
  REMAT_CHECK(
      options_.num_replicas > 0 && options_.rank >= 0 && options_.rank < options_.num_replicas,
      "DataLoader: rank must be in [0, num_replicas), got rank {} of {}", options_.rank,
      options_.num_replicas);
  REMAT_CHECK(inputs_.size(0) > 0 || options_.num_replicas == 1,
              "DataLoader: no samples to share among {} replicas", options_.num_replicas);
}

int64_t DataLoader::samples_per_epoch() const {
  return (num_samples() + options_.num_replicas - 1) / options_.num_replicas;
}

int64_t DataLoader::num_batches() const {
  const int64_t samples = samples_per_epoch();
  const int64_t full = samples / options_.batch_size;
  const bool partial = samples % options_.batch_size != 0;
  return full + (partial && !options_.drop_last ? 1 : 0);
}

std::vector<int64_t> DataLoader::order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(num_samples()));
  std::iota(order.begin(), order.end(), 0);
  if (!options_.shuffle) return order;
  // Fisher-Yates with our own stream: std::shuffle's draws differ between standard libraries.
  RandomStream stream(options_.seed, static_cast<uint64_t>(epoch));
  for (size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[stream.uniform_index(static_cast<int64_t>(i))]);
  }
  if (options_.num_replicas == 1) return order;
  // Every num_replicas-th of the order extended by wrapping around.
  std::vector<int64_t> share(static_cast<size_t>(samples_per_epoch()));
  for (size_t i = 0; i < share.size(); ++i) {
    const auto position =
        static_cast<size_t>(static_cast<int64_t>(i) * options_.num_replicas + options_.rank);
    share[i] = order[position % order.size()];
  }
  return share;
}

Batch DataLoader::gather(std::span<const int64_t> indices) const {
  for (int64_t index : indices) {
    REMAT_CHECK(index >= 0 && index < num_samples(),
                "DataLoader::gather: sample {} is outside [0, {})", index, num_samples());
  }
  return {gather_rows(inputs_, indices), gather_rows(targets_, indices)};
}

DataLoader::Epoch DataLoader::epoch(int64_t epoch) const { return Epoch(*this, order(epoch)); }

Batch DataLoader::Epoch::operator[](int64_t batch) const {
  REMAT_CHECK(batch >= 0 && batch < size(), "DataLoader::Epoch: batch {} is outside [0, {})", batch,
              size());
  const int64_t batch_size = loader_->options().batch_size;
  const int64_t first = batch * batch_size;
  const int64_t count = std::min(batch_size, static_cast<int64_t>(order_.size()) - first);
  return loader_->gather(
      std::span(order_).subspan(static_cast<size_t>(first), static_cast<size_t>(count)));
}

}  // namespace remat::data
