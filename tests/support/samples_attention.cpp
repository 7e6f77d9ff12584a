#include "ops/registry.h"
#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> attention_samples() {
  auto causal_softmax = [](const std::vector<Tensor>& x) {
    return ops::call1(ops::op("softmax"), {x[0]}, ops::DimAttrs{.dim = -1, .causal = true});
  };
  // Inputs q, k, v and, where given, the mask (not checked: no gradient).
  auto sdpa = [](AttentionOptions options) {
    return [options](const std::vector<Tensor>& x) {
      AttentionOptions o = options;
      if (x.size() > 3) o.mask = x[3];
      manual_seed(5);  // every evaluation draws the same dropout mask
      return scaled_dot_product_attention(x[0], x[1], x[2], o);
    };
  };
  auto qkv = [](Shape q, Shape k, Shape v, uint64_t seed) {
    return std::vector<Tensor>{uniform(q, -1, 1, seed), uniform(k, -1, 1, seed + 1),
                               uniform(v, -1, 1, seed + 2)};
  };
  auto with_mask = [](std::vector<Tensor> x, Shape mask, uint64_t seed) {
    x.push_back(uniform(mask, -2, 2, seed, false));
    return x;
  };
  const AttentionOptions math{.impl = AttentionImpl::Math};
  const AttentionOptions math_causal{.causal = true, .impl = AttentionImpl::Math};
  // A [N, L, H, E] layout viewed as [N, H, L, E], as MultiheadAttention's heads are.
  auto strided_q = [](const std::vector<Tensor>& x) {
    return scaled_dot_product_attention(x[0].transpose(1, 2), x[1], x[2], true);
  };
  return {
      {"softmax", "causal_square", causal_softmax, {uniform({2, 3, 3}, -1, 1, 41)}},
      {"softmax", "causal_more_keys", causal_softmax, {uniform({2, 4}, -1, 1, 42)}},
      // The math path is composed of matmul, mul_scalar, softmax (causal or
      // not), add (the mask) and dropout.
      {"softmax", "sdpa_math_causal", sdpa(math_causal), qkv({2, 3, 4}, {2, 3, 4}, {2, 3, 2}, 43)},
      {"softmax", "sdpa_math_causal_more_keys", sdpa(math_causal),
       qkv({1, 2, 3}, {1, 4, 3}, {1, 4, 3}, 46)},
      {"softmax", "sdpa_math_broadcast_batch", sdpa(math),
       qkv({2, 2, 3, 4}, {2, 1, 5, 4}, {5, 3}, 49)},
      // The fused op: every option, and shapes that cross its 128 x 256 tiles.
      {"scaled_dot_product_attention", "plain", sdpa({}), qkv({2, 3, 4}, {2, 5, 4}, {2, 5, 3}, 52)},
      {"scaled_dot_product_attention", "causal_square", sdpa({.causal = true}),
       qkv({2, 4, 3}, {2, 4, 3}, {2, 4, 2}, 55)},
      {"scaled_dot_product_attention", "causal_more_keys", sdpa({.causal = true}),
       qkv({1, 2, 3}, {1, 5, 3}, {1, 5, 4}, 58)},
      {"scaled_dot_product_attention", "mask_broadcast", sdpa({.scale = 0.7}),
       with_mask(qkv({2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 3}, 61), {2, 1, 3, 5}, 64)},
      {"scaled_dot_product_attention", "dropout_causal", sdpa({.causal = true, .dropout_p = 0.3}),
       qkv({2, 5, 3}, {2, 5, 3}, {2, 5, 2}, 65)},
      {"scaled_dot_product_attention", "broadcast_batch", sdpa({}),
       qkv({2, 2, 3, 4}, {2, 1, 5, 4}, {5, 3}, 68)},
      {"scaled_dot_product_attention", "strided_q_causal", strided_q,
       qkv({1, 3, 2, 4}, {1, 2, 3, 4}, {1, 2, 3, 2}, 71)},
      {"scaled_dot_product_attention", "across_tiles_causal", sdpa({.causal = true}),
       qkv({1, 150, 2}, {1, 280, 2}, {1, 280, 2}, 74)},
  };
}

}  // namespace remat::testing
