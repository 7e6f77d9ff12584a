// Convolution and pooling: forward values against a naive direct loop and
// hand-computed cases, backward on hand-computed cases, and the errors the
// shape rules raise. Gradients in general are covered by test_gradcheck.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ops/registry.h"
#include "remat/remat.h"
#include "support/gradcheck.h"

namespace remat::testing {
namespace {

Tensor values(const std::vector<double>& v, const Shape& shape) { return from_vector(v, shape); }

// Reports the worst element only, so large tensors stay cheap to compare.
void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double error = std::abs(got[i] - want[i]) / std::max(1.0, std::abs(want[i]));
    if (!(error <= worst)) {
      worst = error;
      worst_at = i;
    }
  }
  EXPECT_LE(worst, tol) << "element " << worst_at << ": got " << got[worst_at] << ", want "
                        << want[worst_at];
}

struct ConvCase {
  Shape x, w;
  bool bias;
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
};

// The definition of a grouped, strided, padded, dilated cross-correlation.
std::vector<double> naive_conv2d(const std::vector<double>& x, const std::vector<double>& w,
                                 const std::vector<double>& b, const ConvCase& c, Shape& out) {
  const int64_t n_ = c.x[0], ch = c.x[1], h = c.x[2], wd = c.x[3];
  const int64_t o_ = c.w[0], cg = c.w[1], kh = c.w[2], kw = c.w[3];
  const int64_t oh = (h + 2 * c.padding[0] - c.dilation[0] * (kh - 1) - 1) / c.stride[0] + 1;
  const int64_t ow = (wd + 2 * c.padding[1] - c.dilation[1] * (kw - 1) - 1) / c.stride[1] + 1;
  out = {n_, o_, oh, ow};
  std::vector<double> y;
  for (int64_t n = 0; n < n_; ++n) {
    for (int64_t o = 0; o < o_; ++o) {
      const int64_t group = o / (o_ / c.groups);
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          double acc = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
          for (int64_t k = 0; k < cg; ++k) {
            for (int64_t i = 0; i < kh; ++i) {
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t iy = oy * c.stride[0] - c.padding[0] + i * c.dilation[0];
                const int64_t ix = ox * c.stride[1] - c.padding[1] + j * c.dilation[1];
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                acc += x[static_cast<size_t>(((n * ch + group * cg + k) * h + iy) * wd + ix)] *
                       w[static_cast<size_t>(((o * cg + k) * kh + i) * kw + j)];
              }
            }
          }
          y.push_back(acc);
        }
      }
    }
  }
  return y;
}

const std::vector<ConvCase> kConvCases = {
    {{2, 4, 7, 6}, {6, 2, 3, 3}, true, {2, 1}, {1, 2}, {2, 1}, 2},
    {{1, 3, 5, 5}, {4, 3, 3, 3}, false, {1, 1}, {0, 0}, {1, 1}, 1},
    {{3, 2, 4, 4}, {2, 2, 1, 1}, true, {1, 1}, {0, 0}, {1, 1}, 1},   // pointwise
    {{2, 6, 5, 8}, {6, 1, 3, 2}, false, {1, 3}, {1, 0}, {1, 1}, 6},  // depthwise
    {{1, 2, 9, 9}, {3, 2, 4, 4}, true, {3, 3}, {3, 3}, {2, 2}, 1},
    {{2, 1, 3, 4}, {2, 1, 1, 2}, false, {1, 2}, {2, 3}, {1, 1}, 1},  // padding past the kernel
};

void check_against_naive(const ConvCase& c, DType dtype, double tol, uint64_t seed) {
  Tensor x = uniform(c.x, -1, 1, seed, false), w = uniform(c.w, -1, 1, seed + 1, false);
  Tensor b = c.bias ? uniform({c.w[0]}, -1, 1, seed + 2, false) : Tensor();
  Shape want_shape;
  std::vector<double> want =
      naive_conv2d(x.to_vector<double>(), w.to_vector<double>(),
                   c.bias ? b.to_vector<double>() : std::vector<double>{}, c, want_shape);
  Tensor y = conv2d(x.to(dtype), w.to(dtype), c.bias ? b.to(dtype) : Tensor(), c.stride, c.padding,
                    c.dilation, c.groups);
  EXPECT_EQ(y.dtype(), dtype);
  EXPECT_EQ(y.shape(), want_shape);
  expect_near(y.to(kFloat64).to_vector<double>(), want, tol);
}

TEST(Conv2d, MatchesNaiveLoopFloat64) {
  uint64_t seed = 500;
  for (const ConvCase& c : kConvCases) check_against_naive(c, kFloat64, 1e-12, seed += 3);
}

TEST(Conv2d, MatchesNaiveLoopFloat32) {
  uint64_t seed = 600;
  for (const ConvCase& c : kConvCases) check_against_naive(c, kFloat32, 1e-5, seed += 3);
}

TEST(Conv2d, ReducedPrecisionComputesInFloat32) {
  check_against_naive(kConvCases[0], kBFloat16, 5e-2, 700);
}

TEST(Conv2d, HandComputedDifferenceKernel) {
  // y[i][j] = x[i][j] - x[i+1][j+1] = -4 for x = 1..9 row-major, plus the bias.
  Tensor x = values({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  Tensor w = values({1, 0, 0, -1}, {1, 1, 2, 2});
  EXPECT_EQ(conv2d(x, w).to_vector<double>(), (std::vector<double>{-4, -4, -4, -4}));
  EXPECT_EQ(conv2d(x, w, values({0.5}, {1})).to_vector<double>(),
            (std::vector<double>{-3.5, -3.5, -3.5, -3.5}));
}

TEST(Conv2d, HandComputedPaddedOnesCountNeighbours) {
  Tensor y = conv2d(ones({1, 1, 3, 3}, kFloat64), ones({1, 1, 3, 3}, kFloat64), {}, {1, 1}, {1, 1});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 3, 3}));
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{4, 6, 4, 6, 9, 6, 4, 6, 4}));
}

TEST(Conv2d, HandComputedGradients) {
  Tensor x = values({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3}).requires_grad_();
  Tensor w = ones({1, 1, 2, 2}, kFloat64).requires_grad_();
  Tensor b = zeros({1}, kFloat64).requires_grad_();
  sum(conv2d(x, w, b)).backward();
  // dx: how many of the four 2x2 windows cover each element.
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 2, 1, 2, 4, 2, 1, 2, 1}));
  // dw[i][j]: the sum of x over the windows shifted by (i, j).
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{12, 16, 24, 28}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{4}));
}

TEST(Conv2d, NoBiasGivesGradientsToInputAndWeight) {
  Tensor x = uniform({2, 2, 4, 4}, -1, 1, 710), w = uniform({3, 2, 3, 3}, -1, 1, 711);
  sum(conv2d(x, w, {}, {1, 1}, {1, 1})).backward();
  EXPECT_EQ(x.grad().shape(), x.shape());
  EXPECT_EQ(w.grad().shape(), w.shape());
}

// The op always takes (x, weight, bias): an absent bias is an undefined third
// operand, whose gradient stays undefined while x and weight get theirs.
TEST(Conv2d, OpTakesAnUndefinedBiasAsItsThirdOperand) {
  Tensor x = uniform({1, 2, 4, 4}, -1, 1, 730), w = uniform({3, 2, 2, 2}, -1, 1, 731);
  const ops::Attrs attrs = ops::Conv2dAttrs{};
  Tensor y = ops::call1(ops::op("conv2d"), {x, w, Tensor()}, attrs);
  EXPECT_EQ(y.to_vector<double>(), conv2d(x, w).to_vector<double>());
  sum(y).backward();
  EXPECT_EQ(x.grad().shape(), x.shape());
  EXPECT_EQ(w.grad().shape(), w.shape());
  EXPECT_THROW(ops::call1(ops::op("conv2d"), {x, w}, attrs), Error);
}

TEST(Conv2d, EmptyBatch) {
  Tensor x = zeros({0, 2, 4, 4}, kFloat64).requires_grad_();
  Tensor w = ones({3, 2, 3, 3}, kFloat64).requires_grad_();
  Tensor y = conv2d(x, w, ones({3}, kFloat64), {1, 1}, {1, 1});
  EXPECT_EQ(y.shape(), (Shape{0, 3, 4, 4}));
  sum(y).backward();
  EXPECT_EQ(x.grad().shape(), x.shape());
  EXPECT_EQ(w.grad().to_vector<double>(), std::vector<double>(54, 0.0));
}

// Samples big enough that the column buffer holds one at a time: the batch
// then runs in chunks, whose results must equal the samples run alone.
TEST(Conv2d, ChunkedBatchMatchesSamplesAlone) {
  const Shape one{1, 1, 512, 512};
  Tensor x0 = uniform(one, -1, 1, 720, false), x1 = uniform(one, -1, 1, 721, false);
  Tensor w = uniform({2, 1, 3, 3}, -1, 1, 722, false);
  auto grads = [&](const Tensor& x_in) {
    Tensor x = x_in.detach().requires_grad_(), wl = w.detach().clone().requires_grad_();
    Tensor y = conv2d(x, wl, {}, {1, 1}, {1, 1});
    Tensor seed = ones(y.shape(), kFloat64);
    y.backward(seed);
    return std::vector<Tensor>{y, x.grad(), wl.grad()};
  };
  auto alone0 = grads(x0), alone1 = grads(x1), both = grads(concat({x0, x1}, 0));
  for (size_t k = 0; k < 2; ++k) {
    expect_near(both[k].to_vector<double>(), concat({alone0[k], alone1[k]}, 0).to_vector<double>(),
                1e-12);
  }
  expect_near(both[2].to_vector<double>(), (alone0[2] + alone1[2]).to_vector<double>(), 1e-10);
}

template <typename Fn>
void expect_shape_error(Fn&& fn, const std::string& op, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "expected a ShapeError from " << op;
  } catch (const ShapeError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(op + ":"), std::string::npos) << what;
    EXPECT_NE(what.find(fragment), std::string::npos) << what;
  }
}

TEST(Conv2d, BadShapesThrowShapeErrorNamingTheOp) {
  Tensor x = zeros({1, 4, 5, 5}), w = zeros({2, 4, 3, 3});
  expect_shape_error([&] { conv2d(zeros({4, 5, 5}), w); }, "conv2d", "[4, 5, 5]");
  expect_shape_error([&] { conv2d(x, zeros({2, 4, 3})); }, "conv2d", "[2, 4, 3]");
  expect_shape_error(
      [&] {
        conv2d(x, zeros({3, 2, 3, 3}), {}, {1, 1}, {0, 0}, {1, 1}, 3);
      },
      "conv2d", "groups=3");
  expect_shape_error([&] { conv2d(x, zeros({2, 3, 3, 3})); }, "conv2d", "[2, 3, 3, 3]");
  expect_shape_error(
      [&] {
        conv2d(x, zeros({2, 2, 3, 3}), {}, {1, 1}, {0, 0}, {1, 1}, 1);
      },
      "conv2d", "[1, 4, 5, 5]");
  expect_shape_error([&] { conv2d(x, w, zeros({3})); }, "conv2d", "[3]");
  expect_shape_error([&] { conv2d(x, zeros({2, 4, 6, 3})); }, "conv2d", "[1, 4, 5, 5]");
  expect_shape_error([&] { conv2d(x, w, {}, {1, 1}, {0, 0}, {3, 1}); }, "conv2d", "dilation 3x1");
}

TEST(Conv2d, BadArgumentsThrow) {
  Tensor x = zeros({1, 4, 5, 5}), w = zeros({2, 4, 3, 3});
  EXPECT_THROW(conv2d(x, w, {}, {0, 1}), Error);
  EXPECT_THROW(conv2d(x, w, {}, {1, 1}, {-1, 0}), Error);
  EXPECT_THROW(conv2d(x, w, {}, {1}), Error);
  EXPECT_THROW(conv2d(x, w, {}, {1, 1}, {0, 0}, {1, 1}, 0), Error);
  EXPECT_THROW(conv2d(x, zeros({2, 4, 3, 3}, kFloat64)), Error);
}

TEST(MaxPool2d, HandComputed) {
  Tensor x = values({1, 5, 2, 0, 3, 4, 8, 7, 9, 6, 1, 2, 0, 3, 4, 5}, {1, 1, 4, 4});
  Tensor y = max_pool2d(x, {2, 2});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{5, 8, 9, 5}));
}

TEST(MaxPool2d, PaddingCountsAsMinusInfinity) {
  Tensor x = values({-1, -2, -3, -4}, {1, 1, 2, 2});
  Tensor y = max_pool2d(x, {2, 2}, {1, 1}, {1, 1});
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{-1, -1, -2, -1, -1, -2, -3, -3, -4}));
}

TEST(MaxPool2d, NaNPropagates) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> y =
      max_pool2d(values({1, nan, 3, 4}, {1, 1, 2, 2}), {2, 2}).to_vector<double>();
  ASSERT_EQ(y.size(), 1u);
  EXPECT_TRUE(std::isnan(y[0]));
}

TEST(MaxPool2d, BackwardSumsOverlappingWindows) {
  // The centre is the maximum of all four overlapping 2x2 windows.
  Tensor x = values({1, 2, 3, 4, 9, 5, 6, 7, 8}, {1, 1, 3, 3}).requires_grad_();
  sum(max_pool2d(x, {2, 2}, {1, 1})).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 0, 0, 4, 0, 0, 0, 0}));
}

TEST(MaxPool2d, ReducedPrecisionKeepsIndicesForBackward) {
  Tensor x = values({1, 5, 2, 0, 3, 4, 8, 7, 9, 6, 1, 2, 0, 3, 4, 5}, {1, 1, 4, 4});
  Tensor xh = x.to(kBFloat16).requires_grad_();
  Tensor y = max_pool2d(xh, {2, 2});
  EXPECT_EQ(y.dtype(), kBFloat16);
  EXPECT_EQ(y.to(kFloat64).to_vector<double>(), (std::vector<double>{5, 8, 9, 5}));
  sum(y).backward();
  EXPECT_EQ(xh.grad().to(kFloat64).to_vector<double>(),
            (std::vector<double>{0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1}));
}

TEST(AvgPool2d, HandComputed) {
  Tensor x = values({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, {1, 1, 4, 4});
  EXPECT_EQ(avg_pool2d(x, {2, 2}).to_vector<double>(), (std::vector<double>{3.5, 5.5, 11.5, 13.5}));
  // Overlapping 3x3 windows, stride 1: the means of the four 3x3 blocks.
  EXPECT_EQ(avg_pool2d(x, {3, 3}, {1, 1}).to_vector<double>(), (std::vector<double>{6, 7, 10, 11}));
}

TEST(AvgPool2d, PaddingCountsInTheDivisor) {
  Tensor y = avg_pool2d(ones({1, 1, 2, 2}, kFloat64), {2, 2}, {1, 1}, {1, 1});
  EXPECT_EQ(y.to_vector<double>(),
            (std::vector<double>{0.25, 0.5, 0.25, 0.5, 1, 0.5, 0.25, 0.5, 0.25}));
}

TEST(AvgPool2d, BackwardSpreadsOverWindows) {
  Tensor x = zeros({1, 1, 3, 3}, kFloat64).requires_grad_();
  sum(avg_pool2d(x, {2, 2}, {1, 1})).backward();
  EXPECT_EQ(x.grad().to_vector<double>(),
            (std::vector<double>{0.25, 0.5, 0.25, 0.5, 1, 0.5, 0.25, 0.5, 0.25}));
}

TEST(AdaptiveAvgPool2d, UnevenBinsOverlap) {
  // 5 -> 2 bins: rows/cols [0, 3) and [2, 5); x[r][c] = 5r + c.
  std::vector<double> v;
  for (int i = 0; i < 25; ++i) v.push_back(i);
  Tensor y = adaptive_avg_pool2d(values(v, {1, 1, 5, 5}), {2, 2});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{6, 8, 16, 18}));
}

TEST(AdaptiveAvgPool2d, LargerOutputRepeatsAndAverages) {
  // 2 -> 3 bins: [0, 1), [0, 2), [1, 2).
  Tensor x = values({2, 4}, {1, 1, 2, 1}).requires_grad_();
  Tensor y = adaptive_avg_pool2d(x, {3, 1});
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{2, 3, 4}));
  sum(y).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1.5, 1.5}));
}

TEST(AdaptiveAvgPool2d, OneBinIsTheMean) {
  Tensor x = uniform({2, 3, 4, 5}, -1, 1, 730, false);
  expect_near(adaptive_avg_pool2d(x, {1, 1}).to_vector<double>(),
              mean(x, {2, 3}).to_vector<double>(), 1e-14);
}

TEST(Pool2d, BadShapesThrowShapeErrorNamingTheOp) {
  expect_shape_error([] { max_pool2d(zeros({1, 4, 4}), {2, 2}); }, "max_pool2d", "[1, 4, 4]");
  expect_shape_error(
      [] {
        avg_pool2d(zeros({1, 1, 4, 4, 1}), {2, 2});
      },
      "avg_pool2d", "[1, 1, 4, 4, 1]");
  expect_shape_error([] { max_pool2d(zeros({1, 1, 2, 5}), {3, 3}); }, "max_pool2d", "[1, 1, 2, 5]");
  expect_shape_error(
      [] {
        avg_pool2d(zeros({1, 1, 5, 2}), {2, 3}, {1, 1});
      },
      "avg_pool2d", "[1, 1, 5, 2]");
  expect_shape_error(
      [] {
        adaptive_avg_pool2d(zeros({2, 4, 4}), {2, 2});
      },
      "adaptive_avg_pool2d", "[2, 4, 4]");
}

TEST(Pool2d, BadArgumentsThrow) {
  Tensor x = zeros({1, 1, 6, 6});
  EXPECT_THROW(max_pool2d(x, {2, 2}, {1, 1}, {2, 0}), Error);  // padding > kernel/2
  EXPECT_THROW(avg_pool2d(x, {2, 2}, {0, 1}), Error);
  EXPECT_THROW(max_pool2d(x, {0, 2}), Error);
  EXPECT_THROW(adaptive_avg_pool2d(x, {0, 2}), Error);
  EXPECT_THROW(adaptive_avg_pool2d(x, {2}), Error);
}

}  // namespace
}  // namespace remat::testing
