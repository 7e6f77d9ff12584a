#include "remat/data/random_stream.h"

#include <limits>

#include "kernels/philox.h"
#include "remat/core/error.h"

namespace remat::data {

uint64_t RandomStream::next() {
  // The 128-bit Philox counter is (draw number, stream id), so streams never overlap.
  kernels::Philox4 counter{{static_cast<uint32_t>(counter_), static_cast<uint32_t>(counter_ >> 32),
                            static_cast<uint32_t>(stream_), static_cast<uint32_t>(stream_ >> 32)}};
  ++counter_;
  kernels::Philox4 block = kernels::philox4x32_10(counter, static_cast<uint32_t>(seed_),
                                                  static_cast<uint32_t>(seed_ >> 32));
  return static_cast<uint64_t>(block.v[0]) | static_cast<uint64_t>(block.v[1]) << 32;
}

int64_t RandomStream::uniform_index(int64_t n) {
  REMAT_CHECK(n > 0, "RandomStream::uniform_index: n must be positive, got {}", n);
  const auto bound = static_cast<uint64_t>(n);
  // Draws below 2^64 mod n would make the smallest residues more likely; redraw them.
  const uint64_t rejected = (std::numeric_limits<uint64_t>::max() - bound + 1) % bound;
  uint64_t draw = next();
  while (draw < rejected) draw = next();
  return static_cast<int64_t>(draw % bound);
}

}  // namespace remat::data
