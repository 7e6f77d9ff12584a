#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> loss_samples() {
  auto targets = [](std::vector<int64_t> t, const Shape& shape) { return from_vector(t, shape); };
  return {
      {"cross_entropy",
       "basic",
       [](const std::vector<Tensor>& x) { return cross_entropy(x[0], x[1]); },
       {uniform({4, 5}, -2, 2, 31), targets({0, 4, 2, 2}, {4})}},
      {"cross_entropy",
       "ignore_index",
       [](const std::vector<Tensor>& x) { return cross_entropy(x[0], x[1], 3); },
       {uniform({4, 5}, -2, 2, 32), targets({1, 3, 4, 3}, {4})}},
      {"cross_entropy",
       "default_ignore_index",
       [](const std::vector<Tensor>& x) { return cross_entropy(x[0], x[1]); },
       {uniform({3, 4}, -2, 2, 33), targets({-100, 2, 0}, {3})}},
      {"cross_entropy",
       "spatial",
       [](const std::vector<Tensor>& x) { return cross_entropy(x[0], x[1]); },
       {uniform({2, 3, 4}, -2, 2, 34), targets({0, 1, 2, 1, 2, 2, 0, 1}, {2, 4})}},
      {"cross_entropy",
       "strided",
       [](const std::vector<Tensor>& x) { return cross_entropy(x[0].transpose(0, 1), x[1]); },
       {uniform({5, 3}, -2, 2, 35), targets({4, 0, 1}, {3})}},
      // mse_loss is composed of sub, mul and mean.
      {"mean",
       "mse_loss",
       [](const std::vector<Tensor>& x) { return mse_loss(x[0], x[1]); },
       {uniform({3, 4}, -1, 1, 36), uniform({3, 4}, -1, 1, 37)}},
  };
}

}  // namespace remat::testing
