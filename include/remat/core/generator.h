// The default random generator. Random ops draw from a counter-based Philox
// stream: each op reserves a range of the counter (seed, offset) and its
// values are a pure function of (seed, offset, element index). The tape
// records (seed, offset), so replaying an op reproduces its numbers exactly
// and on any device.
#pragma once

#include <cstdint>

namespace remat {

struct PhiloxState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

void manual_seed(uint64_t seed);
// Reserves `count` numbers of the default stream; returns where they start.
PhiloxState reserve_philox(int64_t count);
// Where the default stream is, and putting it back there (a profiling run
// that must not move the numbers the real one draws).
PhiloxState generator_state();
void set_generator_state(PhiloxState state);

}  // namespace remat
