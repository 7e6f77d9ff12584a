#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> linalg_samples() {
  auto mm = [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); };
  return {
      {"matmul", "2d", mm, {uniform({3, 4}, -1, 1, 41), uniform({4, 2}, -1, 1, 42)}},
      {"matmul",
       "batched_broadcast",
       mm,
       {uniform({2, 1, 3, 4}, -1, 1, 43), uniform({3, 4, 5}, -1, 1, 44)}},
      {"matmul",
       "transposed_operand",
       [](const std::vector<Tensor>& x) { return matmul(x[0], x[1].transpose(0, 1)); },
       {uniform({3, 4}, -1, 1, 45), uniform({2, 4}, -1, 1, 46)}},
      {"matmul",
       "bias",
       [](const std::vector<Tensor>& x) { return matmul(x[0], x[1], x[2]); },
       {uniform({2, 3, 4}, -1, 1, 47), uniform({4, 5}, -1, 1, 48), uniform({5}, -1, 1, 49)}},
  };
}

}  // namespace remat::testing
