#include "support/gradcheck.h"

namespace remat::testing {
namespace {

// Distinct values in [-1, 1) at least 2/numel apart (a permutation of a
// grid), so a finite-difference nudge never changes which element is a max.
Tensor distinct(const Shape& shape, int64_t multiplier) {
  const int64_t n = numel_of(shape);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    v[static_cast<size_t>(i)] =
        -1 + 2 * static_cast<double>(i * multiplier % n) / static_cast<double>(n);
  }
  Tensor t = from_vector(v, shape);
  t.requires_grad_();
  return t;
}

}  // namespace

std::vector<OpSample> pool_samples() {
  return {
      // 97 is coprime with the element counts, so the values are a permutation.
      {"max_pool2d",
       "overlap_padding",
       [](const std::vector<Tensor>& x) {
         return max_pool2d(x[0], {3, 3}, {2, 2}, {1, 1});
       },
       {distinct({2, 2, 7, 6}, 97)}},
      {"max_pool2d",
       "default_stride_rectangular",
       [](const std::vector<Tensor>& x) {
         return max_pool2d(x[0], {2, 3});
       },
       {distinct({1, 3, 4, 7}, 97)}},
      {"avg_pool2d",
       "overlap_padding",
       [](const std::vector<Tensor>& x) {
         return avg_pool2d(x[0], {3, 2}, {2, 1}, {1, 1});
       },
       {uniform({2, 2, 7, 5}, -1, 1, 321)}},
      {"avg_pool2d",
       "default_stride_strided_input",
       [](const std::vector<Tensor>& x) {
         return avg_pool2d(x[0].transpose(2, 3), {2, 2});
       },
       {uniform({1, 2, 5, 4}, -1, 1, 322)}},
      {"adaptive_avg_pool2d",
       "uneven_bins",
       [](const std::vector<Tensor>& x) {
         return adaptive_avg_pool2d(x[0], {3, 2});
       },
       {uniform({2, 2, 7, 5}, -1, 1, 323)}},
      {"adaptive_avg_pool2d",
       "upsampling",
       [](const std::vector<Tensor>& x) {
         return adaptive_avg_pool2d(x[0], {4, 5});
       },
       {uniform({1, 2, 3, 2}, -1, 1, 324)}},
  };
}

}  // namespace remat::testing
