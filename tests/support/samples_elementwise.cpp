#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> elementwise_samples() {
  auto binary = [](const char* op, auto fn, double lo, double hi) {
    return std::vector<OpSample>{
        {op,
         "same_shape",
         [fn](const std::vector<Tensor>& x) { return fn(x[0], x[1]); },
         {uniform({2, 3}, lo, hi, 1), uniform({2, 3}, lo, hi, 2)}},
        {op,
         "broadcast",
         [fn](const std::vector<Tensor>& x) { return fn(x[0], x[1]); },
         {uniform({2, 1, 3}, lo, hi, 3), uniform({4, 1}, lo, hi, 4)}},
        {op,
         "strided",
         [fn](const std::vector<Tensor>& x) { return fn(x[0].transpose(0, 1), x[1]); },
         {uniform({3, 2}, lo, hi, 5), uniform({2, 3}, lo, hi, 6)}},
    };
  };
  std::vector<OpSample> all;
  for (auto v : {binary(
                     "add", [](const Tensor&a, const Tensor&b) { return a + b; }, -1, 1),
                 binary(
                     "sub", [](const Tensor&a, const Tensor&b) { return a - b; }, -1, 1),
                 binary(
                     "mul", [](const Tensor&a, const Tensor&b) { return a * b; }, -1, 1),
                 binary(
                     "div", [](const Tensor&a, const Tensor&b) { return a / b; }, 0.5, 2)}) {
    for (auto& s : v) all.push_back(std::move(s));
  }
  auto unary = [&](const char* op, auto fn, double lo, double hi) {
    all.push_back({op,
                   "",
                   [fn](const std::vector<Tensor>& x) { return fn(x[0]); },
                   {uniform({3, 4}, lo, hi, 7)}});
  };
  unary(
      "add_scalar", [](const Tensor& x) { return x + 2.5; }, -1, 1);
  unary(
      "mul_scalar", [](const Tensor& x) { return x * -1.5; }, -1, 1);
  unary(
      "pow_scalar", [](const Tensor& x) { return pow(x, 2.5); }, 0.5, 2);
  unary(
      "neg", [](const Tensor& x) { return -x; }, -1, 1);
  unary(
      "exp", [](const Tensor& x) { return exp(x); }, -1, 1);
  unary(
      "log", [](const Tensor& x) { return log(x); }, 0.5, 2);
  unary(
      "sqrt", [](const Tensor& x) { return sqrt(x); }, 0.5, 2);
  return all;
}

}  // namespace remat::testing
