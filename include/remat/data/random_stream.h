// A seeded random stream for data order: shuffles and window starts.
#pragma once

#include <cstdint>

namespace remat::data {

// Counter-based Philox numbers keyed by a seed, independent of the default
// generator behind manual_seed(): reseeding a model's initialisation does not
// move the data order, and the data order is reproducible from its own seed.
// Streams with the same seed and different stream ids are independent (the
// loader uses one per epoch).
class RandomStream {
 public:
  explicit RandomStream(uint64_t seed, uint64_t stream = 0) : seed_(seed), stream_(stream) {}

  // 64 uniformly random bits.
  uint64_t next();
  // Uniform in [0, n), without modulo bias; n must be positive.
  int64_t uniform_index(int64_t n);

 private:
  uint64_t seed_;
  uint64_t stream_;
  uint64_t counter_ = 0;
};

}  // namespace remat::data
