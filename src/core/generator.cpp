#include "remat/core/generator.h"

#include <mutex>

namespace remat {
namespace {
std::mutex generator_mutex;
PhiloxState default_state{0x5eed5eedull, 0};
}  // namespace

void manual_seed(uint64_t seed) {
  std::lock_guard lock(generator_mutex);
  default_state = {seed, 0};
}

PhiloxState generator_state() {
  std::lock_guard lock(generator_mutex);
  return default_state;
}

void set_generator_state(PhiloxState state) {
  std::lock_guard lock(generator_mutex);
  default_state = state;
}

PhiloxState reserve_philox(int64_t count) {
  std::lock_guard lock(generator_mutex);
  PhiloxState start = default_state;
  // Keep each op's range aligned to whole Philox blocks of four numbers.
  default_state.offset += (static_cast<uint64_t>(count) + 3) / 4 * 4;
  return start;
}

}  // namespace remat
