#include "ops/registry.h"
#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> activation_samples() {
  std::vector<OpSample> all;
  auto unary = [&](const char* op, auto fn, double lo, double hi) {
    all.push_back({op,
                   "",
                   [fn](const std::vector<Tensor>& x) { return fn(x[0]); },
                   {uniform({3, 5}, lo, hi, 11)}});
  };
  // relu is not differentiable at 0: keep samples away from it.
  all.push_back({"relu",
                 "away_from_kink",
                 [](const std::vector<Tensor>& x) { return relu(x[0]); },
                 {from_vector(std::vector<double>{-2, -0.5, 0.3, 1.7, -0.1, 0.9}, {2, 3})}});
  all.back().inputs[0].requires_grad_();
  unary(
      "gelu", [](const Tensor& x) { return gelu(x); }, -3, 3);
  unary(
      "gelu_tanh", [](const Tensor& x) { return gelu(x, "tanh"); }, -3, 3);
  unary(
      "tanh", [](const Tensor& x) { return tanh(x); }, -2, 2);
  unary(
      "sigmoid", [](const Tensor& x) { return sigmoid(x); }, -3, 3);
  unary(
      "softmax", [](const Tensor& x) { return softmax(x, -1); }, -2, 2);
  unary(
      "softmax", [](const Tensor& x) { return softmax(x, 0); }, -2, 2);
  unary(
      "log_softmax", [](const Tensor& x) { return log_softmax(x, 1); }, -2, 2);
  unary(
      "log_softmax", [](const Tensor& x) { return log_softmax(x, 0); }, -2, 2);
  // The fused backward ops, on their own (double backward): g and a softmax
  // output y; along dim 0 the rows are strided.
  auto backward_op = [&](const char* op, int64_t dim, const char* label, bool log) {
    Tensor y = uniform({3, 4}, -2, 2, 12, false);
    y = (log ? log_softmax(y, dim) : softmax(y, dim)).detach().requires_grad_();
    all.push_back({op,
                   label,
                   [op, dim](const std::vector<Tensor>& x) {
                     return ops::call1(ops::op(op), {x[0], x[1]}, ops::DimAttrs{.dim = dim});
                   },
                   {uniform({3, 4}, -1, 1, 13), y}});
  };
  backward_op("softmax_backward", -1, "rows", false);
  backward_op("softmax_backward", 0, "strided_rows", false);
  backward_op("log_softmax_backward", -1, "rows", true);
  backward_op("log_softmax_backward", 0, "strided_rows", true);
  return all;
}

}  // namespace remat::testing
