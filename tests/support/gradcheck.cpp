#include "support/gradcheck.h"

#include <cctype>
#include <cmath>

#include "kernels/philox.h"

namespace remat::testing {

Tensor uniform(const Shape& shape, double lo, double hi, uint64_t seed, bool requires_grad) {
  std::vector<double> v(static_cast<size_t>(numel_of(shape)));
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = lo + (hi - lo) * static_cast<double>(kernels::philox_uniform(seed, 0, i));
  }
  Tensor t = from_vector(v, shape);
  if (requires_grad) t.requires_grad_();
  return t;
}

namespace {

double weighted_sum(const Tensor& y, const std::vector<double>& w) {
  std::vector<double> v = y.to_vector<double>();
  double total = 0;
  for (size_t i = 0; i < v.size(); ++i) total += v[i] * w[i];
  return total;
}

}  // namespace

GradcheckResult gradcheck(const OpSample& s) {
  GradcheckResult result;
  Tensor y = s.fn(s.inputs);
  std::vector<double> w = uniform({y.numel()}, -1, 1, 77, false).to_vector<double>();
  Tensor weights = from_vector(w, y.shape());
  for (const Tensor& x : s.inputs) {
    if (x.requires_grad()) x.set_grad({});
  }
  backward(sum(y * weights));

  const double step = 1e-6;
  for (size_t k = 0; k < s.inputs.size(); ++k) {
    const Tensor& x = s.inputs[k];
    if (!x.requires_grad()) continue;
    std::vector<double> analytic = x.grad().defined()
                                       ? x.grad().to_vector<double>()
                                       : std::vector<double>(static_cast<size_t>(x.numel()), 0.0);
    REMAT_CHECK(x.is_contiguous(), "gradcheck inputs must be contiguous");
    double* p = x.data<double>();  // nudging this storage nudges the input
    for (int64_t i = 0; i < x.numel(); ++i) {
      NoGradGuard no_grad;
      const double original = p[i];
      p[i] = original + step;
      double plus = weighted_sum(s.fn(s.inputs), w);
      p[i] = original - step;
      double minus = weighted_sum(s.fn(s.inputs), w);
      p[i] = original;
      double numeric = (plus - minus) / (2 * step);
      double error =
          std::abs(analytic[static_cast<size_t>(i)] - numeric) / std::max(1.0, std::abs(numeric));
      if (error > result.max_error) {
        result.max_error = error;
        result.worst = fmt::format("input {} element {}: analytic {} numeric {}", k, i,
                                   analytic[static_cast<size_t>(i)], numeric);
      }
    }
  }
  return result;
}

std::vector<OpSample> registry_samples() {
  std::vector<OpSample> all;
  for (auto family : {elementwise_samples, reduction_samples, shape_samples, linalg_samples,
                      activation_samples, normalization_samples, random_samples, loss_samples,
                      conv_samples, pool_samples, attention_samples, embedding_samples}) {
    for (OpSample& s : family()) all.push_back(std::move(s));
  }
  return all;
}

std::string sample_test_name(const OpSample& sample, size_t index) {
  std::string name = sample.op + "_" + sample.label;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name + "_" + std::to_string(index);
}

}  // namespace remat::testing
