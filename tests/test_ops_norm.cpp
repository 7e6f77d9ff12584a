// layer_norm and batch_norm: forward values against naive loops, the
// auxiliary statistics, the running-statistics update and its version bump,
// eval mode, and the errors. Gradients are checked by test_gradcheck.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/registry.h"
#include "remat/remat.h"
#include "support/gradcheck.h"

namespace remat {
namespace {

using testing::uniform;

struct Stats {
  std::vector<double> mean, var;  // var: biased
};

// Mean and biased variance of each row of a [rows, cols] array, two passes.
Stats row_stats(const std::vector<double>& x, int64_t rows, int64_t cols) {
  Stats s;
  for (int64_t r = 0; r < rows; ++r) {
    double total = 0;
    for (int64_t j = 0; j < cols; ++j) total += x[static_cast<size_t>(r * cols + j)];
    const double m = total / static_cast<double>(cols);
    double sq = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const double d = x[static_cast<size_t>(r * cols + j)] - m;
      sq += d * d;
    }
    s.mean.push_back(m);
    s.var.push_back(sq / static_cast<double>(cols));
  }
  return s;
}

std::vector<double> naive_layer_norm(const std::vector<double>& x, int64_t cols,
                                     const std::vector<double>& w, const std::vector<double>& b,
                                     double eps) {
  const int64_t rows = static_cast<int64_t>(x.size()) / cols;
  Stats s = row_stats(x, rows, cols);
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      const size_t i = static_cast<size_t>(r * cols + j);
      const double xhat =
          (x[i] - s.mean[static_cast<size_t>(r)]) / std::sqrt(s.var[static_cast<size_t>(r)] + eps);
      y[i] = xhat * w[static_cast<size_t>(j)] + b[static_cast<size_t>(j)];
    }
  }
  return y;
}

// Per-channel mean and biased variance of x [N, C, S].
Stats channel_stats(const std::vector<double>& x, int64_t n, int64_t c, int64_t s) {
  std::vector<double> by_channel;
  for (int64_t ch = 0; ch < c; ++ch) {
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t k = 0; k < s; ++k)
        by_channel.push_back(x[static_cast<size_t>((b * c + ch) * s + k)]);
    }
  }
  return row_stats(by_channel, c, n * s);
}

std::vector<double> naive_batch_norm(const std::vector<double>& x, int64_t n, int64_t c, int64_t s,
                                     const std::vector<double>& mean,
                                     const std::vector<double>& var, const std::vector<double>& w,
                                     const std::vector<double>& b, double eps) {
  std::vector<double> y(x.size());
  for (int64_t bi = 0; bi < n; ++bi) {
    for (int64_t ch = 0; ch < c; ++ch) {
      const size_t cc = static_cast<size_t>(ch);
      for (int64_t k = 0; k < s; ++k) {
        const size_t i = static_cast<size_t>((bi * c + ch) * s + k);
        y[i] = (x[i] - mean[cc]) / std::sqrt(var[cc] + eps) * w[cc] + b[cc];
      }
    }
  }
  return y;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

template <typename Fn>
void expect_shape_error(Fn&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no ShapeError thrown";
  } catch (const ShapeError& e) {
    const std::string what = e.what();
    for (const std::string& f : fragments) {
      EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' missing from: " << what;
    }
  }
}

TEST(LayerNorm, ForwardAndStatisticsMatchNaiveLoop) {
  Tensor x = uniform({2, 3, 4}, -2, 3, 1, false);
  Tensor w = uniform({3, 4}, 0.5, 1.5, 2, false);
  Tensor b = uniform({3, 4}, -0.5, 0.5, 3, false);
  const double eps = 1e-5;
  const std::vector<double> xv = x.to_vector<double>();
  expect_near(layer_norm(x, w, b, eps).to_vector<double>(),
              naive_layer_norm(xv, 12, w.to_vector<double>(), b.to_vector<double>(), eps), 1e-12);

  std::vector<Tensor> outs =
      ops::run_forward(ops::op("layer_norm"), {x, w, b}, ops::LayerNormAttrs{.eps = eps});
  ASSERT_EQ(outs.size(), 3u);
  EXPECT_EQ(outs[1].shape(), (Shape{2, 1, 1}));
  Stats s = row_stats(xv, 2, 12);
  expect_near(outs[1].to_vector<double>(), s.mean, 1e-12);
  std::vector<double> rstd;
  for (double v : s.var) rstd.push_back(1 / std::sqrt(v + eps));
  expect_near(outs[2].to_vector<double>(), rstd, 1e-12);
}

TEST(LayerNorm, Float32WithLargeMeanMatchesNaiveLoop) {
  Tensor x = (uniform({4, 8}, -1, 1, 4, false) + 1000.0).to(kFloat32);
  Tensor w = uniform({8}, 0.5, 1.5, 5, false).to(kFloat32);
  Tensor b = uniform({8}, -0.5, 0.5, 6, false).to(kFloat32);
  Tensor y = layer_norm(x, w, b);
  EXPECT_EQ(y.dtype(), kFloat32);
  // The reference sees the same float32 inputs, widened.
  expect_near(y.to_vector<double>(),
              naive_layer_norm(x.to_vector<double>(), 8, w.to_vector<double>(),
                               b.to_vector<double>(), 1e-5),
              2e-4);
}

TEST(LayerNorm, WithoutWeightNormalisesLastDimOrBiasShape) {
  Tensor x = uniform({2, 3, 4}, -1, 1, 7, false);
  const std::vector<double> xv = x.to_vector<double>();
  expect_near(
      layer_norm(x, {}, {}).to_vector<double>(),
      naive_layer_norm(xv, 4, std::vector<double>(4, 1.0), std::vector<double>(4, 0.0), 1e-5),
      1e-12);
  Tensor b = uniform({3, 4}, -0.5, 0.5, 8, false);
  expect_near(layer_norm(x, {}, b).to_vector<double>(),
              naive_layer_norm(xv, 12, std::vector<double>(12, 1.0), b.to_vector<double>(), 1e-5),
              1e-12);
}

TEST(LayerNorm, OpTakesWeightAndBiasInFixedSlotsEitherUndefined) {
  Tensor x = uniform({2, 3, 4}, -1, 1, 60, false);
  Tensor w = uniform({3, 4}, 0.5, 1.5, 61, false);
  Tensor b = uniform({3, 4}, -0.5, 0.5, 62, false);
  const std::vector<double> xv = x.to_vector<double>();
  const std::vector<double> unit(12, 1.0), zero(12, 0.0);
  const ops::OpDef& op = ops::op("layer_norm");
  const ops::LayerNormAttrs eps{.eps = 1e-5};
  expect_near(ops::call1(op, {x, w, Tensor()}, eps).to_vector<double>(),
              naive_layer_norm(xv, 12, w.to_vector<double>(), zero, 1e-5), 1e-12);
  expect_near(ops::call1(op, {x, Tensor(), b}, eps).to_vector<double>(),
              naive_layer_norm(xv, 12, unit, b.to_vector<double>(), 1e-5), 1e-12);
  // Without either, the attribute says how many trailing dims to normalise.
  expect_near(ops::call1(op, {x, Tensor(), Tensor()},
                         ops::LayerNormAttrs{.eps = 1e-5, .normalized_ndim = 2})
                  .to_vector<double>(),
              naive_layer_norm(xv, 12, unit, zero, 1e-5), 1e-12);
  EXPECT_THROW(ops::call1(op, {x, Tensor(), Tensor()}, eps), Error);
  expect_shape_error(
      [&] {
        ops::call1(op, {x, w, Tensor()}, ops::LayerNormAttrs{.eps = 1e-5, .normalized_ndim = 1});
      },
      {"layer_norm", "normalized_ndim=1", "weight", "[3, 4]"});
  EXPECT_THROW(ops::call1(op, {x, w}, eps), Error);
}

// No ones weight stands in for an absent one: the op allocates its three
// outputs (y, mean, rstd) and nothing else.
TEST(LayerNorm, WithoutWeightAllocatesOnlyItsOutputs) {
  Tensor x = uniform({4, 64}, -1, 1, 63);
  Tensor b = uniform({64}, -0.5, 0.5, 64);
  for (const Tensor& bias : {Tensor(), b}) {
    const int64_t before = memory::stats(kCPU).allocation_count.allocated;
    Tensor y = layer_norm(x, {}, bias);
    EXPECT_EQ(memory::stats(kCPU).allocation_count.allocated - before, 3)
        << (bias.defined() ? "with bias" : "without bias");
  }
}

TEST(LayerNorm, BFloat16KeepsFloat32Statistics) {
  Tensor x = uniform({3, 16}, -1, 1, 9, false);
  Tensor w = uniform({16}, 0.5, 1.5, 10, false);
  std::vector<Tensor> outs = ops::run_forward(
      ops::op("layer_norm"), {x.to(kBFloat16), w.to(kBFloat16), Tensor()}, ops::LayerNormAttrs{});
  EXPECT_EQ(outs[0].dtype(), kBFloat16);
  EXPECT_EQ(outs[1].dtype(), kFloat32);
  EXPECT_EQ(outs[2].dtype(), kFloat32);
  expect_near(outs[0].to_vector<double>(), layer_norm(x, w, {}).to_vector<double>(), 5e-2);

  Tensor x16 = x.to(kBFloat16).requires_grad_();
  Tensor w16 = w.to(kBFloat16).requires_grad_();
  backward(sum(layer_norm(x16, w16, {}) * uniform({3, 16}, -1, 1, 35, false).to(kBFloat16)));
  EXPECT_EQ(x16.grad().dtype(), kBFloat16);
  EXPECT_EQ(w16.grad().dtype(), kBFloat16);
}

TEST(LayerNorm, Float32GradientsMatchFloat64) {
  Tensor x64 = uniform({4, 40}, -1, 1, 11);
  Tensor w64 = uniform({40}, 0.5, 1.5, 12);
  Tensor b64 = uniform({40}, -0.5, 0.5, 13);
  Tensor g = uniform({4, 40}, -1, 1, 14, false);
  backward(sum(layer_norm(x64, w64, b64) * g));
  Tensor x32 = x64.detach().to(kFloat32).requires_grad_();
  Tensor w32 = w64.detach().to(kFloat32).requires_grad_();
  Tensor b32 = b64.detach().to(kFloat32).requires_grad_();
  backward(sum(layer_norm(x32, w32, b32) * g.to(kFloat32)));
  expect_near(x32.grad().to_vector<double>(), x64.grad().to_vector<double>(), 1e-4);
  expect_near(w32.grad().to_vector<double>(), w64.grad().to_vector<double>(), 1e-4);
  expect_near(b32.grad().to_vector<double>(), b64.grad().to_vector<double>(), 1e-4);
}

// Large enough for the kernels' parallel paths and several weight-gradient
// column chunks; the reference is the same formula written with other ops.
TEST(LayerNorm, LargeForwardAndGradientsMatchComposedOps) {
  Tensor x = uniform({700, 100}, -1, 1, 40);
  Tensor w = uniform({100}, 0.5, 1.5, 41);
  Tensor b = uniform({100}, -0.5, 0.5, 42);
  Tensor g = uniform({700, 100}, -1, 1, 43, false);
  Tensor y = layer_norm(x, w, b);
  backward(sum(y * g));
  const std::vector<double> dx = x.grad().to_vector<double>();
  const std::vector<double> dw = w.grad().to_vector<double>();
  const std::vector<double> db = b.grad().to_vector<double>();
  for (const Tensor& t : {x, w, b}) t.set_grad({});

  Tensor centered = x - mean(x, {-1}, true);
  Tensor reference = centered / sqrt(mean(centered * centered, {-1}, true) + 1e-5) * w + b;
  backward(sum(reference * g));
  expect_near(y.to_vector<double>(), reference.to_vector<double>(), 1e-10);
  expect_near(dx, x.grad().to_vector<double>(), 1e-10);
  expect_near(dw, w.grad().to_vector<double>(), 1e-10);
  expect_near(db, b.grad().to_vector<double>(), 1e-10);
}

TEST(LayerNorm, WeightShapeNotTrailingDimsIsShapeError) {
  Tensor x = uniform({2, 3, 4}, -1, 1, 15, false);
  expect_shape_error([&] { layer_norm(x, ones({3}, kFloat64), {}); },
                     {"layer_norm", "[3]", "[2, 3, 4]"});
  expect_shape_error(
      [&] {
        layer_norm(x, ones({2, 3, 4, 1}, kFloat64), {});
      },
      {"layer_norm", "[2, 3, 4, 1]", "[2, 3, 4]"});
  expect_shape_error([&] { layer_norm(x, ones({4}, kFloat64), ones({3}, kFloat64)); },
                     {"layer_norm", "bias", "[3]", "[4]"});
}

TEST(BatchNorm, TrainingForwardAndStatisticsMatchNaiveLoop) {
  Tensor x = uniform({2, 3, 2, 2}, -2, 3, 16, false);
  Tensor w = uniform({3}, 0.5, 1.5, 17, false);
  Tensor b = uniform({3}, -0.5, 0.5, 18, false);
  const std::vector<double> xv = x.to_vector<double>();
  Stats s = channel_stats(xv, 2, 3, 4);
  expect_near(batch_norm(x, {}, {}, w, b, true).to_vector<double>(),
              naive_batch_norm(xv, 2, 3, 4, s.mean, s.var, w.to_vector<double>(),
                               b.to_vector<double>(), 1e-5),
              1e-12);

  std::vector<Tensor> outs =
      ops::run_forward(ops::op("batch_norm"), {x, Tensor(), Tensor(), w, b}, ops::BatchNormAttrs{});
  expect_near(outs[1].to_vector<double>(), s.mean, 1e-12);
  std::vector<double> invstd;
  for (double v : s.var) invstd.push_back(1 / std::sqrt(v + 1e-5));
  expect_near(outs[2].to_vector<double>(), invstd, 1e-12);
}

TEST(BatchNorm, TwoDimInputWithoutAffine) {
  Tensor x = uniform({5, 3}, -1, 1, 19, false);
  const std::vector<double> xv = x.to_vector<double>();
  Stats s = channel_stats(xv, 5, 3, 1);
  expect_near(batch_norm(x, {}, {}, {}, {}, true).to_vector<double>(),
              naive_batch_norm(xv, 5, 3, 1, s.mean, s.var, {1, 1, 1}, {0, 0, 0}, 1e-5), 1e-12);
}

TEST(BatchNorm, WeightOnlyAndBiasOnlyMatchNaiveLoop) {
  Tensor x = uniform({3, 2, 4}, -1, 1, 67, false);
  Tensor w = uniform({2}, 0.5, 1.5, 68, false);
  Tensor b = uniform({2}, -0.5, 0.5, 69, false);
  const std::vector<double> xv = x.to_vector<double>();
  Stats s = channel_stats(xv, 3, 2, 4);
  expect_near(batch_norm(x, {}, {}, w, {}, true).to_vector<double>(),
              naive_batch_norm(xv, 3, 2, 4, s.mean, s.var, w.to_vector<double>(), {0, 0}, 1e-5),
              1e-12);
  expect_near(batch_norm(x, {}, {}, {}, b, true).to_vector<double>(),
              naive_batch_norm(xv, 3, 2, 4, s.mean, s.var, {1, 1}, b.to_vector<double>(), 1e-5),
              1e-12);
  EXPECT_THROW(ops::call1(ops::op("batch_norm"), {x, w, b}, ops::BatchNormAttrs{}), Error);
}

TEST(BatchNorm, WithoutWeightAllocatesOnlyItsOutputs) {
  Tensor x = uniform({4, 16, 3}, -1, 1, 65);
  Tensor b = uniform({16}, -0.5, 0.5, 66);
  Tensor running_mean = zeros({16}, kFloat64), running_var = ones({16}, kFloat64);
  for (bool training : {true, false}) {
    for (const Tensor& bias : {Tensor(), b}) {
      const int64_t before = memory::stats(kCPU).allocation_count.allocated;
      Tensor y = batch_norm(x, running_mean, running_var, {}, bias, training);
      EXPECT_EQ(memory::stats(kCPU).allocation_count.allocated - before, 3)
          << (training ? "training" : "eval") << (bias.defined() ? ", with bias" : "");
    }
  }
}

TEST(BatchNorm, RunningStatisticsFollowMomentumWithUnbiasedVariance) {
  Tensor running_mean = zeros({3}, kFloat64);
  Tensor running_var = ones({3}, kFloat64);
  const double momentum = 0.25;
  std::vector<double> want_mean{0, 0, 0}, want_var{1, 1, 1};
  for (uint64_t step = 0; step < 2; ++step) {
    Tensor x = uniform({4, 3, 2}, -1 + static_cast<double>(step), 2, 20 + step, false);
    const uint32_t mean_version = running_mean.version(), var_version = running_var.version();
    batch_norm(x, running_mean, running_var, {}, {}, true, momentum);
    EXPECT_EQ(running_mean.version(), mean_version + 1);
    EXPECT_EQ(running_var.version(), var_version + 1);

    Stats s = channel_stats(x.to_vector<double>(), 4, 3, 2);
    for (size_t c = 0; c < 3; ++c) {
      const double unbiased = s.var[c] * 8.0 / 7.0;
      want_mean[c] = (1 - momentum) * want_mean[c] + momentum * s.mean[c];
      want_var[c] = (1 - momentum) * want_var[c] + momentum * unbiased;
    }
    expect_near(running_mean.to_vector<double>(), want_mean, 1e-12);
    expect_near(running_var.to_vector<double>(), want_var, 1e-12);
  }
}

TEST(BatchNorm, BFloat16InputUpdatesFloat32RunningStatistics) {
  Tensor x = uniform({6, 2, 3}, -1, 1, 36, false);
  Tensor running_mean = zeros({2}, kFloat32);
  Tensor running_var = ones({2}, kFloat32);
  Tensor y = batch_norm(x.to(kBFloat16), running_mean, running_var, {}, {}, true, 0.5);
  EXPECT_EQ(y.dtype(), kBFloat16);
  Stats s = channel_stats(x.to(kBFloat16).to_vector<double>(), 6, 2, 3);
  for (size_t c = 0; c < 2; ++c) {
    EXPECT_NEAR(running_mean.to_vector<double>()[c], 0.5 * s.mean[c], 1e-6);
    EXPECT_NEAR(running_var.to_vector<double>()[c], 0.5 + 0.5 * s.var[c] * 18.0 / 17.0, 1e-6);
  }
  EXPECT_THROW(batch_norm(x.to(kBFloat16), running_mean.to(kBFloat16), running_var.to(kBFloat16),
                          {}, {}, true),
               Error);
}

TEST(BatchNorm, ReplayWithoutUpdateLeavesRunningStatisticsAlone) {
  Tensor x = uniform({4, 3}, -1, 1, 23, false);
  Tensor running_mean = zeros({3}, kFloat64);
  Tensor running_var = ones({3}, kFloat64);
  Tensor w = ones({3}, kFloat64);
  Tensor updated = batch_norm(x, zeros({3}, kFloat64), ones({3}, kFloat64), w, {}, true);
  Tensor y = ops::call1(ops::op("batch_norm"), {x, running_mean, running_var, w, Tensor()},
                        ops::BatchNormAttrs{.update_running_stats = false});
  EXPECT_EQ(y.to_vector<double>(), updated.to_vector<double>());
  EXPECT_EQ(running_mean.to_vector<double>(), (std::vector<double>{0, 0, 0}));
  EXPECT_EQ(running_var.to_vector<double>(), (std::vector<double>{1, 1, 1}));
  EXPECT_EQ(running_mean.version(), 0u);
}

TEST(BatchNorm, EvalNormalisesWithRunningStatistics) {
  Tensor x = uniform({2, 3, 5}, -1, 1, 24, false);
  Tensor running_mean = uniform({3}, -0.5, 0.5, 25, false);
  Tensor running_var = uniform({3}, 0.5, 2, 26, false);
  Tensor w = uniform({3}, 0.5, 1.5, 27, false);
  Tensor b = uniform({3}, -0.5, 0.5, 28, false);
  const std::vector<double> mean_before = running_mean.to_vector<double>();
  const std::vector<double> var_before = running_var.to_vector<double>();
  Tensor y = batch_norm(x, running_mean, running_var, w, b, false);
  expect_near(y.to_vector<double>(),
              naive_batch_norm(x.to_vector<double>(), 2, 3, 5, mean_before, var_before,
                               w.to_vector<double>(), b.to_vector<double>(), 1e-5),
              1e-12);
  EXPECT_EQ(running_mean.to_vector<double>(), mean_before);
  EXPECT_EQ(running_var.to_vector<double>(), var_before);
  EXPECT_EQ(running_mean.version(), 0u);
}

TEST(BatchNorm, BackwardSurvivesALaterTrainingStep) {
  // The running statistics are not saved, so the next step's in-place update
  // does not invalidate the first step's backward.
  Tensor running_mean = zeros({3}, kFloat64);
  Tensor running_var = ones({3}, kFloat64);
  Tensor w = ones({3}, kFloat64).requires_grad_();
  Tensor x = uniform({4, 3}, -1, 1, 29);
  Tensor first = batch_norm(x, running_mean, running_var, w, {}, true);
  Tensor second = batch_norm(x * 2.0, running_mean, running_var, w, {}, true);
  EXPECT_NO_THROW(backward(sum(first * first)));
  EXPECT_TRUE(x.grad().defined());
  EXPECT_TRUE(w.grad().defined());
  EXPECT_EQ(running_mean.version(), 2u);
  (void)second;
}

TEST(BatchNorm, Float32GradientsMatchFloat64) {
  Tensor x64 = uniform({3, 4, 5}, -1, 1, 30);
  Tensor w64 = uniform({4}, 0.5, 1.5, 31);
  Tensor b64 = uniform({4}, -0.5, 0.5, 32);
  Tensor g = uniform({3, 4, 5}, -1, 1, 33, false);
  backward(sum(batch_norm(x64, {}, {}, w64, b64, true) * g));
  Tensor x32 = x64.detach().to(kFloat32).requires_grad_();
  Tensor w32 = w64.detach().to(kFloat32).requires_grad_();
  Tensor b32 = b64.detach().to(kFloat32).requires_grad_();
  backward(sum(batch_norm(x32, {}, {}, w32, b32, true) * g.to(kFloat32)));
  expect_near(x32.grad().to_vector<double>(), x64.grad().to_vector<double>(), 1e-4);
  expect_near(w32.grad().to_vector<double>(), w64.grad().to_vector<double>(), 1e-4);
  expect_near(b32.grad().to_vector<double>(), b64.grad().to_vector<double>(), 1e-4);
}

TEST(BatchNorm, LargeForwardAndGradientsMatchComposedOps) {
  Tensor x = uniform({8, 16, 24, 24}, -1, 1, 50);
  Tensor w = uniform({16}, 0.5, 1.5, 51);
  Tensor b = uniform({16}, -0.5, 0.5, 52);
  Tensor g = uniform({8, 16, 24, 24}, -1, 1, 53, false);
  Tensor y = batch_norm(x, {}, {}, w, b, true);
  backward(sum(y * g));
  const std::vector<double> dx = x.grad().to_vector<double>();
  const std::vector<double> dw = w.grad().to_vector<double>();
  const std::vector<double> db = b.grad().to_vector<double>();
  for (const Tensor& t : {x, w, b}) t.set_grad({});

  Tensor centered = x - mean(x, {0, 2, 3}, true);
  Tensor std = sqrt(mean(centered * centered, {0, 2, 3}, true) + 1e-5);
  Tensor reference = centered / std * reshape(w, {1, 16, 1, 1}) + reshape(b, {1, 16, 1, 1});
  backward(sum(reference * g));
  expect_near(y.to_vector<double>(), reference.to_vector<double>(), 1e-10);
  expect_near(dx, x.grad().to_vector<double>(), 1e-10);
  expect_near(dw, w.grad().to_vector<double>(), 1e-9);
  expect_near(db, b.grad().to_vector<double>(), 1e-9);
}

TEST(BatchNorm, ChannelMismatchIsShapeError) {
  Tensor x = uniform({2, 3, 4}, -1, 1, 34, false);
  expect_shape_error([&] { batch_norm(x, {}, {}, ones({4}, kFloat64), {}, true); },
                     {"batch_norm", "weight", "[4]", "[2, 3, 4]"});
  expect_shape_error(
      [&] { batch_norm(x, zeros({4}, kFloat64), ones({4}, kFloat64), {}, {}, true); },
      {"batch_norm", "running_mean", "[4]", "[2, 3, 4]"});
  expect_shape_error([&] { batch_norm(ones({3}, kFloat64), {}, {}, {}, {}, true); },
                     {"batch_norm", "[N, C, ...]", "[3]"});
}

TEST(BatchNorm, TrainingNeedsMoreThanOneValuePerChannel) {
  expect_shape_error(
      [] {
        batch_norm(ones({1, 3}, kFloat64), {}, {}, {}, {}, true);
      },
      {"batch_norm", "more than one value", "[1, 3]"});
}

TEST(BatchNorm, EvalWithoutRunningStatisticsIsAnError) {
  EXPECT_THROW(batch_norm(ones({2, 3}, kFloat64), {}, {}, {}, {}, false), Error);
}

TEST(BatchNorm, RunningStatisticsMustNotRequireGrad) {
  Tensor running_mean = zeros({3}, kFloat64).requires_grad_();
  EXPECT_THROW(batch_norm(ones({2, 3}, kFloat64), running_mean, ones({3}, kFloat64), {}, {}, true),
               Error);
}

}  // namespace
}  // namespace remat
