// How checkpoint_sequential and the named plans split a stack into groups.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace remat::checkpointing {

// `groups` consecutive groups [begin, end) of `blocks` blocks (at most one
// per block) whose sizes differ by at most one, the larger first.
inline std::vector<std::pair<int64_t, int64_t>> consecutive_groups(int64_t blocks, int64_t groups) {
  std::vector<std::pair<int64_t, int64_t>> out;
  groups = std::min(groups, blocks);
  for (int64_t g = 0, begin = 0; g < groups; ++g) {
    const int64_t end = begin + blocks / groups + (g < blocks % groups ? 1 : 0);
    out.emplace_back(begin, end);
    begin = end;
  }
  return out;
}

}  // namespace remat::checkpointing
