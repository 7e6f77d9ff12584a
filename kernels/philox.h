// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11), shared by the CPU and CUDA kernels so both devices draw the same
// numbers for the same (seed, offset, index).
#pragma once

#include <cmath>
#include <cstdint>

#include "remat/core/host_device.h"

namespace remat::kernels {

struct Philox4 {
  uint32_t v[4];
};

REMAT_HOST_DEVICE inline uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t product = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
}

// Philox4x32 with ten rounds on a 128-bit counter and a 64-bit key.
REMAT_HOST_DEVICE inline Philox4 philox4x32_10(Philox4 counter, uint32_t k0, uint32_t k1) {
  uint32_t c0 = counter.v[0], c1 = counter.v[1], c2 = counter.v[2], c3 = counter.v[3];
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo32(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo32(0xCD9E8D57u, c2, &hi1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// The block at `counter` of the stream keyed by `seed`.
REMAT_HOST_DEVICE inline Philox4 philox(uint64_t seed, uint64_t counter) {
  Philox4 c{{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// The index-th 32-bit number of the stream starting at offset: one Philox
// block yields four numbers.
REMAT_HOST_DEVICE inline uint32_t philox_u32(uint64_t seed, uint64_t offset, uint64_t index) {
  uint64_t n = offset + index;
  return philox(seed, n / 4).v[n % 4];
}

// A 32-bit draw mapped to a float uniform in (0, 1]: never 0, so log() below
// is finite. Kernels that take a whole Philox block at once map each lane.
REMAT_HOST_DEVICE inline float uniform_from_bits(uint32_t bits) {
  return (static_cast<float>(bits >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

REMAT_HOST_DEVICE inline float philox_uniform(uint64_t seed, uint64_t offset, uint64_t index) {
  return uniform_from_bits(philox_u32(seed, offset, index));
}

// Standard normal by Box-Muller over the pair of numbers (2i, 2i+1).
REMAT_HOST_DEVICE inline float philox_normal(uint64_t seed, uint64_t offset, uint64_t index) {
  float u1 = philox_uniform(seed, offset, 2 * index);
  float u2 = philox_uniform(seed, offset, 2 * index + 1);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

}  // namespace remat::kernels
