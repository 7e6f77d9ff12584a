#include "ops/registry.h"
#include "support/gradcheck.h"

namespace remat::testing {

// Dropout is called through the registry with a fixed seed and offset so the
// finite differences see the same mask on every evaluation.
std::vector<OpSample> random_samples() {
  auto fixed_dropout = [](double p, bool transposed) {
    return [p, transposed](const std::vector<Tensor>& x) {
      Tensor in = transposed ? x[0].transpose(0, 1) : x[0];
      ops::Attrs attrs = ops::DropoutAttrs{.p = p};
      attrs.philox = PhiloxState{.seed = 1234, .offset = 8};
      return ops::call1(ops::op("dropout"), {in}, attrs);
    };
  };
  return {
      {"dropout", "p0.3", fixed_dropout(0.3, false), {uniform({4, 5}, -1, 1, 11)}},
      {"dropout", "strided", fixed_dropout(0.5, true), {uniform({5, 4}, -1, 1, 12)}},
      {"dropout", "p1", fixed_dropout(1.0, false), {uniform({3, 3}, -1, 1, 13)}},
  };
}

}  // namespace remat::testing
