#include <gtest/gtest.h>

#include "remat/remat.h"

using namespace remat;

TEST(Smoke, AddAndBackward) {
  Tensor a = from_vector(std::vector<double>{1, 2, 3}, {3});
  a.requires_grad_();
  Tensor b = sum(a * a);
  b.backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{2, 4, 6}));
}
