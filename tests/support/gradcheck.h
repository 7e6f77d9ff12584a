// The shared finite-difference gradient check. Every differentiable op in the
// registry must have at least one OpSample (test_gradcheck enforces it); each
// op family lists its samples in support/samples_<family>.cpp.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "remat/remat.h"

namespace remat::testing {

struct OpSample {
  std::string op;     // the registry op this sample covers
  std::string label;  // what is special about it (broadcast, strided, ...)
  // The function under test; float64 inputs, any output shape.
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  std::vector<Tensor> inputs;  // those with requires_grad are checked
};

struct GradcheckResult {
  double max_error = 0;  // max |analytic - numeric| / max(1, |numeric|)
  std::string worst;     // where it happened
};

// Compares backward of sum(fn(inputs) * w), w fixed random weights, with
// central differences (step 1e-6) on every element of every checked input.
GradcheckResult gradcheck(const OpSample& sample);

// float64 tensor with values uniform in [lo, hi), from a fixed local seed.
Tensor uniform(const Shape& shape, double lo, double hi, uint64_t seed, bool requires_grad = true);

std::vector<OpSample> elementwise_samples();
std::vector<OpSample> reduction_samples();
std::vector<OpSample> shape_samples();
std::vector<OpSample> linalg_samples();
std::vector<OpSample> activation_samples();
std::vector<OpSample> normalization_samples();
std::vector<OpSample> random_samples();
std::vector<OpSample> loss_samples();
std::vector<OpSample> conv_samples();
std::vector<OpSample> pool_samples();
std::vector<OpSample> attention_samples();
std::vector<OpSample> embedding_samples();

// Every family's samples above, in one list: what the registry-driven tests
// iterate over.
std::vector<OpSample> registry_samples();
// A GoogleTest parameter name for sample `index`: op, label and index, with
// every character that is not alphanumeric replaced by '_'.
std::string sample_test_name(const OpSample& sample, size_t index);

}  // namespace remat::testing
