#include "ops/registry.h"
#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> attention_samples() {
  // A finite fill keeps the output finite for the finite differences.
  auto mask = [](const std::vector<Tensor>& x) {
    return ops::call1(ops::op("causal_mask"), {x[0]}, {{"fill", -2.0}});
  };
  auto sdpa = [](bool causal) {
    return [causal](const std::vector<Tensor>& x) {
      return scaled_dot_product_attention(x[0], x[1], x[2], causal);
    };
  };
  return {
      {"causal_mask", "square", mask, {uniform({2, 3, 3}, -1, 1, 41)}},
      {"causal_mask", "more_keys", mask, {uniform({2, 4}, -1, 1, 42)}},
      // scaled_dot_product_attention is composed of matmul, mul_scalar,
      // causal_mask and softmax.
      {"causal_mask",
       "sdpa_causal",
       sdpa(true),
       {uniform({2, 3, 4}, -1, 1, 43), uniform({2, 3, 4}, -1, 1, 44),
        uniform({2, 3, 2}, -1, 1, 45)}},
      {"causal_mask",
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
