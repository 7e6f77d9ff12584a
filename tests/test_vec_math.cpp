// The vectorisable float math behind the CPU GELU kernels, against double libm;
// and the float GELU op and its gradient, contiguous (the ISA-cloned row
// kernels) and strided (the generic loop), against a float64 reference.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "remat/remat.h"

using namespace remat;
using remat::kernels::cpu::vec_exp;
using remat::kernels::cpu::vec_normal_cdf;

namespace {

double ulp_distance(float got, double want) {
  const auto wanted = static_cast<float>(want);
  return std::abs(static_cast<double>(got) - want) /
         std::abs(static_cast<double>(std::nextafter(wanted, INFINITY)) - wanted);
}

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

double gelu_reference(double x) { return x * normal_cdf(x); }

double gelu_grad_reference(double x) {
  return normal_cdf(x) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
}

std::vector<float> grid(float lo, float hi, int n) {
  std::vector<float> xs(n);
  for (int i = 0; i < n; ++i) xs[i] = lo + (hi - lo) * static_cast<float>(i) / (n - 1);
  return xs;
}

}  // namespace

TEST(VecMath, ExpWithinTwoUlp) {
  double worst = 0;
  for (float x : grid(-87.0f, 88.0f, 200001)) {
    worst = std::max(worst, ulp_distance(vec_exp(x), std::exp(static_cast<double>(x))));
  }
  EXPECT_LE(worst, 2.0);
  EXPECT_EQ(vec_exp(0.0f), 1.0f);
}

TEST(VecMath, NormalCdfRelativeError) {
  double worst_core = 0, worst_tail = 0;
  for (float x : grid(-9.0f, 9.0f, 180001)) {
    const double want = normal_cdf(x);
    const double rel = std::abs(vec_normal_cdf(x) - want) / want;
    double& worst = std::abs(x) <= 5.0f ? worst_core : worst_tail;
    worst = std::max(worst, rel);
  }
  EXPECT_LE(worst_core, 3e-6);
  EXPECT_LE(worst_tail, 5e-5);
  EXPECT_EQ(vec_normal_cdf(20.0f), 1.0f);
}

TEST(VecMath, FloatGeluAndGradientMatchFloat64) {
  // Contiguous operands take the ISA-cloned row kernels, a transposed input
  // the generic strided loop; both must agree with the float64 formula. The
  // incoming gradient is a contiguous ones tensor so that the backward, too,
  // takes the row kernel in the contiguous case.
  const std::vector<float> xs = grid(-10.0f, 10.0f, 4096 * 96);
  for (bool strided : {false, true}) {
    Tensor x = from_vector(xs, {4096, 96});
    x.requires_grad_();
    Tensor input = strided ? x.transpose(0, 1) : x;
    Tensor y = gelu(input);
    y.backward(ones(y.shape()));
    const std::vector<float> xv = input.detach().contiguous().to_vector<float>();
    const std::vector<float> yv = y.detach().contiguous().to_vector<float>();
    const std::vector<float> gv =
        x.grad().transpose(0, strided ? 1 : 0).contiguous().to_vector<float>();
    for (size_t i = 0; i < xv.size(); ++i) {
      const double v = xv[i];
      ASSERT_NEAR(yv[i], gelu_reference(v), 1e-6 * std::abs(gelu_reference(v)) + 1e-7 * std::abs(v))
          << "gelu(" << v << ")" << (strided ? " strided" : " contiguous");
      ASSERT_NEAR(gv[i], gelu_grad_reference(v),
                  2e-6 * std::abs(gelu_grad_reference(v)) + 1e-7 * std::abs(v))
          << "gelu'(" << v << ")" << (strided ? " strided" : " contiguous");
    }
  }
}
