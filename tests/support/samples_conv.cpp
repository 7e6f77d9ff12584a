#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> conv_samples() {
  return {
      {"conv2d",
       "stride_padding_dilation_groups_bias",
       [](const std::vector<Tensor>& x) {
         return conv2d(x[0], x[1], x[2], {2, 1}, {1, 2}, {1, 2}, 2);
       },
       {uniform({2, 4, 6, 7}, -1, 1, 301), uniform({6, 2, 3, 2}, -1, 1, 302),
        uniform({6}, -1, 1, 303)}},
      {"conv2d",
       "no_bias_padding",
       [](const std::vector<Tensor>& x) {
         return conv2d(x[0], x[1], {}, {1, 1}, {1, 1});
       },
       {uniform({1, 3, 5, 5}, -1, 1, 304), uniform({2, 3, 3, 3}, -1, 1, 305)}},
      {"conv2d",
       "pointwise_groups_bias",
       [](const std::vector<Tensor>& x) {
         return conv2d(x[0], x[1], x[2], {1, 1}, {0, 0}, {1, 1}, 3);
       },
       {uniform({2, 3, 4, 3}, -1, 1, 306), uniform({6, 1, 1, 1}, -1, 1, 307),
        uniform({6}, -1, 1, 308)}},
      {"conv2d",
       "strided_input_asymmetric_kernel",
       [](const std::vector<Tensor>& x) {
         return conv2d(x[0].transpose(2, 3), x[1], {}, {1, 2}, {0, 1});
       },
       {uniform({2, 2, 6, 5}, -1, 1, 309), uniform({3, 2, 2, 3}, -1, 1, 310)}},
      {"conv2d",
       "padding_past_kernel",
       [](const std::vector<Tensor>& x) {
         return conv2d(x[0], x[1], {}, {1, 2}, {2, 3});
       },
       {uniform({1, 2, 3, 4}, -1, 1, 311), uniform({2, 2, 1, 2}, -1, 1, 312)}},
  };
}

}  // namespace remat::testing
