#include "ops/registry.h"
#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> attention_samples() {
  auto causal_softmax = [](const std::vector<Tensor>& x) {
    return ops::call1(ops::op("softmax"), {x[0]}, ops::DimAttrs{.dim = -1, .causal = true});
  };
  auto sdpa = [](bool causal) {
    return [causal](const std::vector<Tensor>& x) {
      return scaled_dot_product_attention(x[0], x[1], x[2], causal);
    };
  };
  return {
      {"softmax", "causal_square", causal_softmax, {uniform({2, 3, 3}, -1, 1, 41)}},
      {"softmax", "causal_more_keys", causal_softmax, {uniform({2, 4}, -1, 1, 42)}},
      // scaled_dot_product_attention is composed of matmul, mul_scalar and
      // softmax (causal or not).
      {"softmax",
       "sdpa_causal",
       sdpa(true),
       {uniform({2, 3, 4}, -1, 1, 43), uniform({2, 3, 4}, -1, 1, 44),
        uniform({2, 3, 2}, -1, 1, 45)}},
      {"softmax",
       "sdpa_causal_more_keys",
       sdpa(true),
       {uniform({1, 2, 3}, -1, 1, 46), uniform({1, 4, 3}, -1, 1, 47),
        uniform({1, 4, 3}, -1, 1, 48)}},
      {"softmax",
       "sdpa_broadcast_batch",
       sdpa(false),
       {uniform({2, 2, 3, 4}, -1, 1, 49), uniform({2, 1, 5, 4}, -1, 1, 50),
        uniform({5, 3}, -1, 1, 51)}},
  };
}

}  // namespace remat::testing
