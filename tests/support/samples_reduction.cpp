#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> reduction_samples() {
  std::vector<OpSample> all;
  auto add = [&](const char* op, const char* label, auto fn, Shape shape) {
    all.push_back({op,
                   label,
                   [fn](const std::vector<Tensor>& x) { return fn(x[0]); },
                   {uniform(shape, -1, 1, 21)}});
  };
  add("sum", "all", [](const Tensor& x) { return sum(x); }, {2, 3, 4});
  add("sum", "dims_keepdim", [](const Tensor& x) { return sum(x, {0, 2}, true); }, {2, 3, 4});
  add("sum", "dim", [](const Tensor& x) { return sum(x, {-1}); }, {2, 3, 4});
  add("mean", "all", [](const Tensor& x) { return mean(x); }, {2, 3, 4});
  add("mean", "dim", [](const Tensor& x) { return mean(x, {1}); }, {2, 3, 4});
  add("max", "dim", [](const Tensor& x) { return max(x, 1).values; }, {2, 5, 3});
  add("max", "keepdim", [](const Tensor& x) { return max(x, -1, true).values; }, {4, 3});
  return all;
}

}  // namespace remat::testing
