// Forward values of dropout, embedding, the losses and attention against
// hand-computed numbers and naive loops; their properties and error cases.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/philox.h"
#include "ops/registry.h"
#include "remat/remat.h"
#include "support/error_message.h"
#include "support/gradcheck.h"

namespace remat {
namespace {

using testing::uniform;

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want,
                     double tol = 1e-12) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

using testing::error_message;

Tensor fixed_dropout(const Tensor& x, double p, int64_t seed, int64_t offset) {
  ops::Attrs attrs = ops::DropoutAttrs{.p = p};
  attrs.philox =
      PhiloxState{.seed = static_cast<uint64_t>(seed), .offset = static_cast<uint64_t>(offset)};
  return ops::call1(ops::op("dropout"), {x}, attrs);
}

std::vector<bool> kept(const Tensor& y) {
  std::vector<bool> out;
  for (double v : y.to(kFloat64).to_vector<double>()) out.push_back(v != 0);
  return out;
}

// ---- dropout ------------------------------------------------------------------

TEST(Dropout, MaskFollowsTheDocumentedPhiloxRule) {
  Tensor x = ones({63}, kFloat64);
  // An offset inside a Philox block and a length that ends inside one.
  for (int64_t offset : {12, 5}) {
    std::vector<double> v = fixed_dropout(x, 0.25, 99, offset).to_vector<double>();
    for (size_t i = 0; i < v.size(); ++i) {
      bool keep = kernels::philox_uniform(99, static_cast<uint64_t>(offset), i) > 0.25f;
      EXPECT_EQ(v[i], keep ? 1.0 / 0.75 : 0.0) << "offset " << offset << " element " << i;
    }
  }
}

TEST(Dropout, SameSeedAndOffsetGiveTheSameMask) {
  Tensor x = ones({1000});
  EXPECT_EQ(kept(fixed_dropout(x, 0.5, 7, 40)), kept(fixed_dropout(x, 0.5, 7, 40)));
  // The mask depends on the position only, not on the dtype.
  EXPECT_EQ(kept(fixed_dropout(x, 0.5, 7, 40)), kept(fixed_dropout(x.to(kFloat64), 0.5, 7, 40)));
}

TEST(Dropout, DifferentOffsetOrSeedGivesAnotherMask) {
  Tensor x = ones({1000});
  EXPECT_NE(kept(fixed_dropout(x, 0.5, 7, 40)), kept(fixed_dropout(x, 0.5, 7, 1040)));
  EXPECT_NE(kept(fixed_dropout(x, 0.5, 7, 40)), kept(fixed_dropout(x, 0.5, 8, 40)));
}

TEST(Dropout, KeepsAboutOneMinusPAndScalesTheKept) {
  const double p = 0.3;
  Tensor y = fixed_dropout(ones({200000}), p, 2024, 0);  // fixed seed: deterministic
  int64_t count = 0;
  for (float v : y.to_vector<float>()) {
    if (v != 0) {
      ++count;
      EXPECT_FLOAT_EQ(v, static_cast<float>(1.0 / (1.0 - p)));
    }
  }
  EXPECT_NEAR(static_cast<double>(count) / 200000.0, 1.0 - p, 0.005);
}

TEST(Dropout, ManualSeedReproducesTheSequenceOfMasks) {
  Tensor x = ones({512});
  manual_seed(31);
  std::vector<bool> first = kept(dropout(x, 0.5));
  std::vector<bool> second = kept(dropout(x, 0.5));
  EXPECT_NE(first, second);
  manual_seed(31);
  EXPECT_EQ(kept(dropout(x, 0.5)), first);
  EXPECT_EQ(kept(dropout(x, 0.5)), second);
}

TEST(Dropout, IdentityWhenOffOrPZeroAndZerosWhenPOne) {
  Tensor x = uniform({3, 4}, -1, 1, 5);
  EXPECT_EQ(dropout(x, 0.0).impl_ptr(), x.impl_ptr());
  EXPECT_EQ(dropout(x, 0.7, false).impl_ptr(), x.impl_ptr());
  Tensor y = dropout(x, 1.0);
  for (double v : y.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(Dropout, RejectsPOutsideZeroOne) {
  Tensor x = ones({4});
  for (double p : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_NE(error_message([&] { dropout(x, p); }).find("dropout: p must be in [0, 1]"),
              std::string::npos)
        << p;
  }
  EXPECT_THROW(dropout(x, 2.0, false), Error);
}

TEST(Dropout, BackwardRegeneratesTheMaskAndSavesNothing) {
  const ops::OpDef& def = ops::op("dropout");
  EXPECT_TRUE(def.save_inputs.empty());
  EXPECT_TRUE(def.save_outputs.empty());
  Tensor x = ones({300}, kFloat64).requires_grad_();
  Tensor w = uniform({300}, 0.5, 1.5, 6, false);
  Tensor y = dropout(x, 0.4);
  backward(sum(y * w));
  // With x all ones, y is the scaled mask, so the gradient is y * w.
  expect_near_all(x.grad().to_vector<double>(), (y.detach() * w).to_vector<double>(), 0);
}

// ---- embedding ------------------------------------------------------------------

TEST(Embedding, LooksUpRows) {
  Tensor weight = from_vector(std::vector<double>{0, 1, 10, 11, 20, 21, 30, 31}, {4, 2});
  Tensor idx = from_vector(std::vector<int64_t>{3, 0, 3, 1}, {2, 2});
  Tensor y = embedding(weight, idx);
  EXPECT_EQ(y.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{30, 31, 0, 1, 30, 31, 10, 11}));
}

TEST(Embedding, CopiesReducedPrecisionRowsAsTheyAre) {
  Tensor weight = from_vector(std::vector<float>{0.5f, 1.5f, -2.25f, 3.0f}, {2, 2}).to(kBFloat16);
  Tensor y = embedding(weight, from_vector(std::vector<int64_t>{1, 1, 0}, {3}));
  EXPECT_EQ(y.dtype(), kBFloat16);
  EXPECT_EQ(y.to(kFloat32).to_vector<float>(),
            (std::vector<float>{-2.25f, 3.0f, -2.25f, 3.0f, 0.5f, 1.5f}));
}

TEST(Embedding, GradientSumsRepeatedIndices) {
  Tensor weight = zeros({4, 3}, kFloat64).requires_grad_();
  Tensor idx = from_vector(std::vector<int64_t>{3, 0, 3}, {3});
  backward(sum(embedding(weight, idx)));
  EXPECT_EQ(weight.grad().to_vector<double>(),
            (std::vector<double>{1, 1, 1, 0, 0, 0, 0, 0, 0, 2, 2, 2}));
}

TEST(Embedding, LargeGradientMatchesANaiveLoop) {
  // Big enough for the parallel path (threads own column blocks).
  const int64_t vocab = 10, width = 200, n = 400;
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) idx[static_cast<size_t>(k)] = (k * 7 + k / 3) % vocab;
  Tensor weight = zeros({vocab, width}, kFloat64).requires_grad_();
  Tensor g = uniform({n, width}, -1, 1, 8, false);
  backward(embedding(weight, from_vector(idx, {n})), g);
  std::vector<double> want(static_cast<size_t>(vocab * width), 0.0), pg = g.to_vector<double>();
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t d = 0; d < width; ++d) {
      want[static_cast<size_t>(idx[static_cast<size_t>(k)] * width + d)] +=
          pg[static_cast<size_t>(k * width + d)];
    }
  }
  expect_near_all(weight.grad().to_vector<double>(), want, 0);
}

TEST(Embedding, ErrorsNameTheOpTheIndexAndV) {
  Tensor weight = zeros({4, 3});
  std::string msg = error_message([&] {
    embedding(weight, from_vector(std::vector<int64_t>{1, 4}, {2}));
  });
  EXPECT_NE(msg.find("embedding"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("4 embeddings"), std::string::npos) << msg;
  EXPECT_THROW(embedding(weight, from_vector(std::vector<int64_t>{-1}, {1})), Error);
  EXPECT_THROW(embedding(weight, from_vector(std::vector<double>{1}, {1})), Error);
  EXPECT_THROW(embedding(zeros({4}), from_vector(std::vector<int64_t>{1}, {1})), ShapeError);
}

// ---- cross_entropy and mse_loss -------------------------------------------------------

// logits [[1, 2, 3], [1, 0, -1]]: both rows have logsumexp = max + log(1 + e^-1 + e^-2),
// and softmax (e^-2, e^-1, 1) / (1 + e^-1 + e^-2), mirrored for row 1.
constexpr double kLogZ = 0.40760596444438030;  // log(1 + e^-1 + e^-2)
constexpr double kP0 = 0.09003057317038046, kP1 = 0.24472847105479767, kP2 = 0.66524095577481770;

Tensor hand_logits() {
  return from_vector(std::vector<double>{1, 2, 3, 1, 0, -1}, {2, 3}).requires_grad_();
}

TEST(CrossEntropy, TwoByThreeByHand) {
  Tensor logits = hand_logits();
  Tensor loss = cross_entropy(logits, from_vector(std::vector<int64_t>{2, 1}, {2}));
  EXPECT_EQ(loss.shape(), Shape{});
  // Row 0: lse 3 + logZ minus logit 3; row 1: lse 1 + logZ minus logit 0.
  EXPECT_NEAR(loss.item<double>(), (kLogZ + (1 + kLogZ)) / 2, 1e-14);
  backward(loss);
  expect_near_all(logits.grad().to_vector<double>(),
                  {kP0 / 2, kP1 / 2, (kP2 - 1) / 2, kP2 / 2, (kP1 - 1) / 2, kP0 / 2}, 1e-14);
}

TEST(CrossEntropy, IgnoreIndexDropsRowsFromTheMean) {
  Tensor logits = hand_logits();
  Tensor loss = cross_entropy(logits, from_vector(std::vector<int64_t>{2, -100}, {2}));
  EXPECT_NEAR(loss.item<double>(), kLogZ, 1e-14);
  backward(loss);
  expect_near_all(logits.grad().to_vector<double>(), {kP0, kP1, kP2 - 1, 0, 0, 0}, 1e-14);

  Tensor custom = cross_entropy(hand_logits(), from_vector(std::vector<int64_t>{1, 0}, {2}), 1);
  EXPECT_NEAR(custom.item<double>(), 1 + kLogZ - 1, 1e-14);
}

TEST(CrossEntropy, EveryTargetIgnoredIsNaNLikePyTorch) {
  Tensor loss = cross_entropy(hand_logits(), from_vector(std::vector<int64_t>{-100, -100}, {2}));
  EXPECT_TRUE(std::isnan(loss.item<double>()));
}

TEST(CrossEntropy, SpatialMatchesANaiveLoop) {
  const int64_t n = 2, c = 3, s = 4;
  Tensor logits = uniform({n, c, s}, -3, 3, 61, false);
  std::vector<int64_t> t{0, 1, 2, -100, 2, 2, 0, 1};
  Tensor loss = cross_entropy(logits, from_vector(t, {n, s}));
  std::vector<double> x = logits.to_vector<double>();
  double total = 0;
  int count = 0;
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k = 0; k < s; ++k) {
      int64_t target = t[static_cast<size_t>(b * s + k)];
      if (target == -100) continue;
      auto at = [&](int64_t cls) { return x[static_cast<size_t>((b * c + cls) * s + k)]; };
      double z = 0;
      for (int64_t cls = 0; cls < c; ++cls) z += std::exp(at(cls));
      total += std::log(z) - at(target);
      ++count;
    }
  }
  EXPECT_NEAR(loss.item<double>(), total / count, 1e-13);
}

TEST(CrossEntropy, LargeBatchMatchesANaiveLoop) {
  // Big enough for the parallel path over rows.
  const int64_t n = 512, c = 130;
  Tensor logits = uniform({n, c}, -5, 5, 63, false);
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) t[static_cast<size_t>(r)] = r % 5 == 0 ? -100 : (r * 31) % c;
  std::vector<double> x = logits.to_vector<double>();
  double total = 0;
  int count = 0;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t target = t[static_cast<size_t>(r)];
    if (target == -100) continue;
    double z = 0;
    for (int64_t k = 0; k < c; ++k) z += std::exp(x[static_cast<size_t>(r * c + k)]);
    total += std::log(z) - x[static_cast<size_t>(r * c + target)];
    ++count;
  }
  EXPECT_NEAR(cross_entropy(logits, from_vector(t, {n})).item<double>(), total / count, 1e-12);
}

TEST(CrossEntropy, Float32AgreesWithFloat64) {
  Tensor logits = uniform({6, 5}, -4, 4, 62, false);
  Tensor t = from_vector(std::vector<int64_t>{0, 4, 1, 3, 2, 2}, {6});
  EXPECT_NEAR(cross_entropy(logits.to(kFloat32), t).item<float>(),
              cross_entropy(logits, t).item<double>(), 1e-6);
}

TEST(CrossEntropy, Errors) {
  Tensor logits = zeros({2, 3});
  std::string msg = error_message([&] {
    cross_entropy(logits, from_vector(std::vector<int64_t>{0, 3}, {2}));
  });
  EXPECT_NE(msg.find("cross_entropy: target 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3 classes"), std::string::npos) << msg;
  EXPECT_THROW(cross_entropy(logits, from_vector(std::vector<int64_t>{-1, 0}, {2})), Error);
  EXPECT_THROW(cross_entropy(logits, from_vector(std::vector<int64_t>{0, 1, 2}, {3})), ShapeError);
  EXPECT_THROW(cross_entropy(zeros({3}), from_vector(std::vector<int64_t>{0}, {})), ShapeError);
  EXPECT_THROW(cross_entropy(logits, from_vector(std::vector<double>{0, 1}, {2})), Error);
}

TEST(MseLoss, ValueByHandAndShapeCheck) {
  Tensor pred = from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
  Tensor target = from_vector(std::vector<double>{0, 2, 5, 1}, {2, 2});
  EXPECT_DOUBLE_EQ(mse_loss(pred, target).item<double>(), (1 + 0 + 4 + 9) / 4.0);
  std::string msg = error_message([&] { mse_loss(pred, zeros({2}, kFloat64)); });
  EXPECT_NE(msg.find("mse_loss"), std::string::npos) << msg;
  EXPECT_THROW(mse_loss(pred, zeros({2}, kFloat64)), ShapeError);
}

// ---- attention --------------------------------------------------------------------------

TEST(CausalSoftmax, GivesKeysAfterTheQueryProbabilityZero) {
  Tensor x = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor y = ops::call1(ops::op("softmax"), {x}, ops::DimAttrs{.dim = -1, .causal = true});
  // Lq = 2, Lk = 3: query i sees keys j <= i + 1.
  const double e = std::exp(1.0);
  const std::vector<double> want{1 / (1 + e),         e / (1 + e),         0,
                                 1 / (1 + e + e * e), e / (1 + e + e * e), e * e / (1 + e + e * e)};
  const auto got = y.to_vector<double>();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-15) << i;
  // More queries than keys: the first query sees nothing and is NaN.
  Tensor z = ops::call1(ops::op("softmax"), {zeros({3, 2}, kFloat64)},
                        ops::DimAttrs{.dim = -1, .causal = true});
  EXPECT_TRUE(std::isnan(z.to_vector<double>()[0]));
  EXPECT_THROW(ops::call1(ops::op("softmax"), {x}, ops::DimAttrs{.dim = 0, .causal = true}),
               ShapeError);
}

// The fused backward allocates its result and nothing else (the composed
// formula held two result-sized temporaries), and equals the formula.
TEST(SoftmaxBackward, AllocatesOnlyItsResultAndMatchesTheFormula) {
  for (const char* name : {"softmax_backward", "log_softmax_backward"}) {
    const bool log = std::string(name) == "log_softmax_backward";
    Tensor x = uniform({4, 64, 96}, -2, 2, 7, false).to(kFloat32);
    Tensor y = log ? log_softmax(x, -1) : softmax(x, -1);
    Tensor g = uniform({4, 64, 96}, -1, 1, 8, false).to(kFloat32);
    const int64_t before = memory::stats(kCPU).allocated_bytes.current;
    memory::reset_peak_stats(kCPU);
    Tensor dx = ops::call1(ops::op(name), {g, y}, ops::DimAttrs{.dim = -1});
    EXPECT_EQ(memory::stats(kCPU).allocated_bytes.peak - before, dx.nbytes()) << name;
    Tensor want = log ? g - exp(y) * sum(g, {-1}, true) : y * (g - sum(g * y, {-1}, true));
    const auto got = dx.to_vector<float>(), expected = want.to_vector<float>();
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], expected[i], 1e-6) << name << i;
  }
}

// Rows along a dim other than the last are strided; so may be the gradient.
TEST(SoftmaxBackward, StridedOperandsGiveTheContiguousResult) {
  Tensor x = uniform({5, 7}, -2, 2, 9, false);
  Tensor y = softmax(x, 0);
  Tensor g = uniform({7, 5}, -1, 1, 10, false).transpose(0, 1);
  Tensor strided = ops::call1(ops::op("softmax_backward"), {g, y}, ops::DimAttrs{.dim = 0});
  Tensor dense =
      ops::call1(ops::op("softmax_backward"), {g.contiguous(), y}, ops::DimAttrs{.dim = 0});
  EXPECT_EQ(strided.to_vector<double>(), dense.to_vector<double>());
  Tensor want = y * (g - sum(g * y, {0}, true));
  const auto got = strided.to_vector<double>(), expected = want.to_vector<double>();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-15) << i;
}

// softmax(q k^T / sqrt(E) + mask) v, one batch at a time.
std::vector<double> naive_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    bool causal) {
  const int64_t batches = q.size(0), lq = q.size(1), lk = k.size(1), e = q.size(2), ev = v.size(2);
  std::vector<double> pq = q.to_vector<double>(), pk = k.to_vector<double>(),
                      pv = v.to_vector<double>(), out;
  for (int64_t b = 0; b < batches; ++b) {
    for (int64_t i = 0; i < lq; ++i) {
      std::vector<double> w(static_cast<size_t>(lk), 0.0);
      double total = 0;
      for (int64_t j = 0; j < lk; ++j) {
        if (causal && j > i + (lk - lq)) continue;
        double dot = 0;
        for (int64_t d = 0; d < e; ++d) {
          dot += pq[static_cast<size_t>((b * lq + i) * e + d)] *
                 pk[static_cast<size_t>((b * lk + j) * e + d)];
        }
        w[static_cast<size_t>(j)] = std::exp(dot / std::sqrt(static_cast<double>(e)));
        total += w[static_cast<size_t>(j)];
      }
      for (int64_t d = 0; d < ev; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < lk; ++j) {
          acc += w[static_cast<size_t>(j)] / total * pv[static_cast<size_t>((b * lk + j) * ev + d)];
        }
        out.push_back(acc);
      }
    }
  }
  return out;
}

TEST(Attention, MatchesANaiveLoop) {
  Tensor q = uniform({2, 3, 4}, -1, 1, 71, false);
  Tensor k = uniform({2, 5, 4}, -1, 1, 72, false);
  Tensor v = uniform({2, 5, 3}, -1, 1, 73, false);
  for (bool causal : {false, true}) {
    Tensor y = scaled_dot_product_attention(q, k, v, causal);
    EXPECT_EQ(y.shape(), (Shape{2, 3, 3}));
    expect_near_all(y.to_vector<double>(), naive_attention(q, k, v, causal), 1e-13);
  }
}

TEST(Attention, CausalFirstQueryAttendsOnlyToTheFirstKey) {
  Tensor q = uniform({1, 3, 2}, -1, 1, 74, false);
  Tensor k = uniform({1, 3, 2}, -1, 1, 75, false);
  Tensor v = uniform({1, 3, 2}, -1, 1, 76, false);
  std::vector<double> y = scaled_dot_product_attention(q, k, v, true).to_vector<double>();
  std::vector<double> pv = v.to_vector<double>();
  EXPECT_NEAR(y[0], pv[0], 1e-15);
  EXPECT_NEAR(y[1], pv[1], 1e-15);
}

TEST(Attention, ShapeErrorsNameTheOp) {
  Tensor q = zeros({2, 3, 4});
  std::string msg = error_message([&] {
    scaled_dot_product_attention(q, zeros({2, 3, 5}), zeros({2, 3, 4}));
  });
  EXPECT_NE(msg.find("scaled_dot_product_attention"), std::string::npos) << msg;
  EXPECT_THROW(scaled_dot_product_attention(q, zeros({2, 3, 5}), zeros({2, 3, 4})), ShapeError);
  EXPECT_THROW(scaled_dot_product_attention(q, zeros({2, 3, 4}), zeros({2, 4, 4})), ShapeError);
  EXPECT_THROW(scaled_dot_product_attention(q, zeros({3, 3, 4}), zeros({3, 3, 4})), ShapeError);
  EXPECT_THROW(scaled_dot_product_attention(zeros({4}), zeros({3, 4}), zeros({3, 4})), ShapeError);
  EXPECT_THROW(scaled_dot_product_attention(q, zeros({2, 3, 4}, kFloat64), zeros({2, 3, 4})),
               Error);
}

}  // namespace
}  // namespace remat
