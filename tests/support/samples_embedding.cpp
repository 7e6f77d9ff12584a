#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> embedding_samples() {
  auto lookup = [](const std::vector<Tensor>& x) { return embedding(x[0], x[1]); };
  return {
      // Repeated indices: their gradient rows add up; row 4 is never used.
      {"embedding",
       "repeated_indices",
       lookup,
       {uniform({5, 3}, -1, 1, 21), from_vector(std::vector<int64_t>{0, 2, 2, 3, 0, 1}, {2, 3})}},
      {"embedding",
       "scalar_index",
       lookup,
       {uniform({4, 2}, -1, 1, 22), from_vector(std::vector<int64_t>{3}, {})}},
  };
}

}  // namespace remat::testing
