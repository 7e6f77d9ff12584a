#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> normalization_samples() {
  auto ln = [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2]); };
  auto ln_plain = [](const std::vector<Tensor>& x) { return layer_norm(x[0], {}, {}); };
  // Training samples pass no running statistics: the gradcheck runs the
  // forward many times and must see the same function each time.
  auto bn_train = [](const std::vector<Tensor>& x) {
    return batch_norm(x[0], {}, {}, x[1], x[2], true);
  };
  auto bn_train_plain = [](const std::vector<Tensor>& x) {
    return batch_norm(x[0], {}, {}, {}, {}, true);
  };
  // Fresh running statistics per call: their update must not touch the result.
  auto bn_train_running = [](const std::vector<Tensor>& x) {
    return batch_norm(x[0], zeros({3}, kFloat64), ones({3}, kFloat64), x[1], x[2], true);
  };
  Tensor running_mean = uniform({3}, -0.5, 0.5, 40, false);
  Tensor running_var = uniform({3}, 0.5, 2, 41, false);
  auto bn_eval = [running_mean, running_var](const std::vector<Tensor>& x) {
    return batch_norm(x[0], running_mean, running_var, x[1], x[2], false);
  };
  return {
      {"layer_norm",
       "affine_2d",
       ln,
       {uniform({3, 5}, -1, 1, 21), uniform({5}, 0.5, 1.5, 22), uniform({5}, -0.5, 0.5, 23)}},
      {"layer_norm",
       "affine_3d_two_dims",
       ln,
       {uniform({2, 3, 4}, -1, 1, 24), uniform({3, 4}, 0.5, 1.5, 25),
        uniform({3, 4}, -0.5, 0.5, 26)}},
      {"layer_norm",
       "weight_only_grad",
       ln,
       {uniform({4, 6}, -1, 1, 27, false), uniform({6}, 0.5, 1.5, 28),
        uniform({6}, -0.5, 0.5, 29, false)}},
      {"layer_norm",
       "strided",
       [](const std::vector<Tensor>& x) { return layer_norm(x[0].transpose(0, 1), x[1], {}); },
       {uniform({5, 3}, -1, 1, 30), uniform({5}, 0.5, 1.5, 31)}},
      {"layer_norm",
       "bias_only_two_dims",
       [](const std::vector<Tensor>& x) { return layer_norm(x[0], {}, x[1]); },
       {uniform({2, 3, 4}, -1, 1, 50), uniform({3, 4}, -0.5, 0.5, 51)}},
      {"layer_norm", "no_affine_2d", ln_plain, {uniform({3, 5}, -1, 1, 32)}},
      {"layer_norm", "no_affine_3d", ln_plain, {uniform({2, 3, 4}, -1, 1, 33)}},
      {"batch_norm",
       "train_2d",
       bn_train,
       {uniform({5, 3}, -1, 1, 34), uniform({3}, 0.5, 1.5, 35), uniform({3}, -0.5, 0.5, 36)}},
      {"batch_norm",
       "train_4d",
       bn_train,
       {uniform({2, 3, 2, 3}, -1, 1, 37), uniform({3}, 0.5, 1.5, 38), uniform({3}, -0.5, 0.5, 39)}},
      {"batch_norm", "train_4d_no_affine", bn_train_plain, {uniform({2, 3, 3, 2}, -1, 1, 42)}},
      {"batch_norm",
       "train_weight_only",
       [](const std::vector<Tensor>& x) { return batch_norm(x[0], {}, {}, x[1], {}, true); },
       {uniform({4, 3, 2}, -1, 1, 52), uniform({3}, 0.5, 1.5, 53)}},
      {"batch_norm",
       "train_bias_only",
       [](const std::vector<Tensor>& x) { return batch_norm(x[0], {}, {}, {}, x[1], true); },
       {uniform({4, 3, 2}, -1, 1, 54), uniform({3}, -0.5, 0.5, 55)}},
      {"batch_norm",
       "train_running_stats",
       bn_train_running,
       {uniform({4, 3, 2}, -1, 1, 43), uniform({3}, 0.5, 1.5, 44), uniform({3}, -0.5, 0.5, 45)}},
      {"batch_norm",
       "eval_4d",
       bn_eval,
       {uniform({2, 3, 2, 2}, -1, 1, 46), uniform({3}, 0.5, 1.5, 47), uniform({3}, -0.5, 0.5, 48)}},
      {"batch_norm",
       "eval_2d_no_affine",
       [running_mean, running_var](const std::vector<Tensor>& x) {
         return batch_norm(x[0], running_mean, running_var, {}, {}, false);
       },
       {uniform({4, 3}, -1, 1, 49)}},
      {"batch_norm",
       "eval_bias_only",
       [running_mean, running_var](const std::vector<Tensor>& x) {
         return batch_norm(x[0], running_mean, running_var, {}, x[1], false);
       },
       {uniform({4, 3, 2}, -1, 1, 56), uniform({3}, -0.5, 0.5, 57)}},
  };
}

}  // namespace remat::testing
