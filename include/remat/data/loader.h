// Mini-batches over an in-memory dataset (inputs and targets indexed by their
// first dimension), shuffled per epoch from a seed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <utility>
#include <vector>

#include "remat/core/tensor.h"
#include "remat/data/batch.h"

namespace remat::data {

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  // The order of epoch e is a pure function of (seed, e), so a run resumed at
  // epoch e sees the batches the original run would have seen.
  uint64_t seed = 0;
  // Drop the last batch of an epoch when it would be smaller than batch_size.
  bool drop_last = false;
  // Data-parallel sharding, as PyTorch's DistributedSampler: each epoch's
  // order is one permutation of every sample, the same on every replica,
  // extended by wrapping around to a multiple of num_replicas, and replica
  // `rank` (in [0, num_replicas)) takes every num_replicas-th sample of it,
  // from position rank. Replicas see disjoint samples (but for the few
  // repeated to even them out), the same number of batches, and a different
  // share every epoch.
  int64_t num_replicas = 1;
  int64_t rank = 0;
};

class DataLoader {
 public:
  class Epoch;

  // inputs and targets: CPU tensors with the same first dimension (samples),
  // kept as contiguous tensors sharing storage with the arguments where they
  // already are contiguous.
  DataLoader(const Tensor& inputs, const Tensor& targets, LoaderOptions options = {});

  int64_t num_samples() const { return inputs_.size(0); }
  // Samples this replica visits per epoch: ceil(num_samples / num_replicas).
  int64_t samples_per_epoch() const;
  // Batches per epoch.
  int64_t num_batches() const;
  const LoaderOptions& options() const { return options_; }

  // The order in which `epoch` visits the samples: a permutation drawn from
  // the seed's stream for that epoch, or 0..N-1 without shuffling; this
  // replica's share of it when num_replicas > 1.
  std::vector<int64_t> order(int64_t epoch) const;
  // The given samples, copied row by row into contiguous tensors.
  Batch gather(std::span<const int64_t> indices) const;
  // The batches of one epoch, for range-for; the loader must outlive it.
  Epoch epoch(int64_t epoch) const;

 private:
  Tensor inputs_;
  Tensor targets_;
  LoaderOptions options_;
};

class DataLoader::Epoch {
 public:
  Epoch(const DataLoader& loader, std::vector<int64_t> order)
      : loader_(&loader), order_(std::move(order)) {}

  int64_t size() const { return loader_->num_batches(); }
  Batch operator[](int64_t batch) const;

  // Gathers each batch when dereferenced.
  class Iterator {
   public:
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;

    Iterator() = default;
    Iterator(const Epoch& epoch, int64_t batch) : epoch_(&epoch), batch_(batch) {}
    Batch operator*() const { return (*epoch_)[batch_]; }
    Iterator& operator++() {
      ++batch_;
      return *this;
    }
    void operator++(int) { ++batch_; }
    bool operator==(std::default_sentinel_t) const { return batch_ == epoch_->size(); }

   private:
    const Epoch* epoch_ = nullptr;
    int64_t batch_ = 0;
  };

  Iterator begin() const { return Iterator(*this, 0); }
  std::default_sentinel_t end() const { return std::default_sentinel; }

 private:
  const DataLoader* loader_;
  std::vector<int64_t> order_;
};

}  // namespace remat::data
