// The fused scaled_dot_product_attention against the math composition
// (matmul, softmax, dropout, matmul): the same values and gradients to
// float64 rounding with every option, in the 16-bit types within their
// precision, bitwise under checkpoint, and in memory that grows linearly with
// the sequence.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ops/registry.h"
#include "remat/remat.h"
#include "support/error_message.h"
#include "support/gradcheck.h"

namespace remat {
namespace {

using testing::error_message;
using testing::uniform;

struct Case {
  std::string name;
  Shape q, k, v;
  AttentionOptions options;
  Shape mask;  // empty: none
  bool bool_mask = false;
};

// Sizes cross the CPU kernel's 128-query, 256-key tiles.
std::vector<Case> cases() {
  return {
      {"plain", {2, 2, 200, 8}, {2, 2, 300, 8}, {2, 2, 300, 5}, {}},
      {"causal_square", {1, 2, 300, 8}, {1, 2, 300, 8}, {1, 2, 300, 8}, {.causal = true}},
      {"causal_more_keys", {1, 2, 150, 4}, {1, 2, 600, 4}, {1, 2, 600, 6}, {.causal = true}},
      {"dropout", {2, 1, 200, 8}, {2, 1, 300, 8}, {2, 1, 300, 8}, {.dropout_p = 0.3}},
      {"dropout_causal",
       {1, 2, 260, 4},
       {1, 2, 260, 4},
       {1, 2, 260, 4},
       {.causal = true, .dropout_p = 0.5}},
      {"mask_scale",
       {2, 2, 200, 8},
       {2, 2, 300, 8},
       {2, 2, 300, 8},
       {.scale = 0.3},
       {2, 1, 200, 300}},
      {"bool_mask_causal",
       {2, 260, 8},
       {2, 260, 8},
       {2, 260, 8},
       {.causal = true},
       {260, 260},
       true},
      {"broadcast_batch", {2, 2, 200, 8}, {2, 1, 300, 8}, {300, 8}, {}},
      {"no_batch_dims", {33, 8}, {520, 8}, {520, 3}, {.causal = true}},
  };
}

struct Result {
  Tensor out, gq, gk, gv;
};

// Forward, then backward of sum(out * w), from the same generator state.
Result run(const Case& c, AttentionImpl impl, DType dtype, uint64_t seed) {
  Tensor q = uniform(c.q, -1, 1, seed, false).to(dtype).requires_grad_();
  Tensor k = uniform(c.k, -1, 1, seed + 1, false).to(dtype).requires_grad_();
  Tensor v = uniform(c.v, -1, 1, seed + 2, false).to(dtype).requires_grad_();
  AttentionOptions options = c.options;
  options.impl = impl;
  if (!c.mask.empty()) {
    const Tensor m = uniform(c.mask, -3, 3, seed + 3, false);
    if (c.bool_mask) {  // attend where the draw is above -1.5: about three keys in four
      std::vector<bool> attend;
      for (double x : m.to_vector<double>()) attend.push_back(x > -1.5);
      options.mask = from_vector(attend, c.mask);
    } else {
      options.mask = m.to(dtype);
    }
  }
  manual_seed(11);
  const Tensor out = scaled_dot_product_attention(q, k, v, options);
  const Tensor w = uniform(out.shape(), -1, 1, seed + 4, false).to(dtype);
  sum(out * w).backward();
  return {out, q.grad(), k.grad(), v.grad()};
}

void expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  const std::vector<double> a = got.to(kFloat64).to_vector<double>();
  const std::vector<double> b = want.to(kFloat64).to_vector<double>();
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  }
  EXPECT_LE(worst, tol) << what;
}

TEST(FusedAttention, MatchesTheMathPathInFloat64) {
  for (const Case& c : cases()) {
    const Result fused = run(c, AttentionImpl::Fused, kFloat64, 100);
    const Result math = run(c, AttentionImpl::Math, kFloat64, 100);
    expect_close(fused.out, math.out, 1e-13, c.name + " out");
    expect_close(fused.gq, math.gq, 1e-12, c.name + " grad q");
    expect_close(fused.gk, math.gk, 1e-12, c.name + " grad k");
    expect_close(fused.gv, math.gv, 1e-12, c.name + " grad v");
  }
}

// float32 and the 16-bit types against the float64 math path, within what
// their rounding allows (bfloat16 keeps 8 bits).
TEST(FusedAttention, ReducedPrecisionStaysNearTheFloat64Reference) {
  const std::vector<std::pair<DType, double>> dtypes{
      {kFloat32, 1e-5}, {kBFloat16, 4e-2}, {kFloat16, 8e-3}};
  for (const Case& c : cases()) {
    const Result reference = run(c, AttentionImpl::Math, kFloat64, 200);
    for (const auto& [dtype, tol] : dtypes) {
      const Result fused = run(c, AttentionImpl::Fused, dtype, 200);
      const std::string what = c.name + " " + std::string(dtype_name(dtype));
      EXPECT_EQ(fused.out.dtype(), dtype) << what;
      EXPECT_EQ(fused.gq.dtype(), dtype) << what;
      expect_close(fused.out, reference.out, tol, what + " out");
      expect_close(fused.gq, reference.gq, 4 * tol, what + " grad q");
      expect_close(fused.gk, reference.gk, 4 * tol, what + " grad k");
      expect_close(fused.gv, reference.gv, 4 * tol, what + " grad v");
    }
  }
}

// Dropout keeps each probability with chance 1 - p: a fused run with p = 0.5
// differs from the run without, and drops about half of them (the output is
// then the math path's, checked above).
TEST(FusedAttention, DropoutDropsAboutPOfTheProbabilities) {
  const Tensor q = uniform({1, 1, 1, 4}, -1, 1, 1, false);
  const Tensor k = uniform({1, 1, 4000, 4}, -1, 1, 2, false);
  const Tensor v = ones({1, 1, 4000, 1}, kFloat64);
  // With v all ones the output is the kept probability mass times 1 / (1 - p).
  const double kept = scaled_dot_product_attention(q, k, v, {.dropout_p = 0.5}).item<double>() / 2;
  EXPECT_NEAR(kept, 0.5, 0.05);
  EXPECT_NEAR(scaled_dot_product_attention(q, k, v, {}).item<double>(), 1.0, 1e-12);
}

// Rows that see no key (Lq > Lk under causal) give NaN, as the math path does,
// and add nothing to any gradient.
TEST(FusedAttention, QueriesThatSeeNoKeyGiveNaNAndNoGradient) {
  const Case c{"more_queries", {1, 5, 3}, {1, 3, 3}, {1, 3, 2}, {.causal = true}};
  const Result fused = run(c, AttentionImpl::Fused, kFloat64, 300);
  const Result math = run(c, AttentionImpl::Math, kFloat64, 300);
  const std::vector<double> out = fused.out.to_vector<double>(),
                            want = math.out.to_vector<double>();
  for (size_t i = 0; i < out.size(); ++i) {
    if (i < 4) {  // queries 0 and 1: no key j <= i - 2
      EXPECT_TRUE(std::isnan(out[i])) << i;
    } else {
      EXPECT_NEAR(out[i], want[i], 1e-14) << i;
    }
  }
  const std::vector<double> gq = fused.gq.to_vector<double>();
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(gq[i], 0.0) << i;
  for (double g : fused.gk.to_vector<double>()) EXPECT_TRUE(std::isfinite(g));
}

// A checkpointed block replays the fused op with its recorded dropout
// numbers: gradients bitwise those of the plain run.
TEST(FusedAttention, CheckpointReplayIsBitwiseExact) {
  auto block = [](const Tensor& x) {
    const Tensor h = x * 1.5;
    return scaled_dot_product_attention(h, h, h, {.causal = true, .dropout_p = 0.2});
  };
  std::vector<std::vector<float>> grads;
  for (bool checkpointed : {false, true}) {
    Tensor x = uniform({2, 2, 100, 16}, -1, 1, 9, false).to(kFloat32).requires_grad_();
    manual_seed(3);
    const Tensor y = checkpointed ? checkpoint(block, x) : block(x);
    sum(y * y).backward();
    grads.push_back(x.grad().to_vector<float>());
  }
  EXPECT_EQ(grads[0], grads[1]);
}

// Two runs of the backward give the same bits (no order-dependent sums).
TEST(FusedAttention, BackwardIsDeterministic) {
  const Case c = cases()[1];
  const Result a = run(c, AttentionImpl::Fused, kFloat32, 400);
  const Result b = run(c, AttentionImpl::Fused, kFloat32, 400);
  EXPECT_EQ(a.gq.to_vector<float>(), b.gq.to_vector<float>());
  EXPECT_EQ(a.gk.to_vector<float>(), b.gk.to_vector<float>());
}

// The step's peak above its inputs, for sequence length t: the math path
// holds [t, t] scores and probabilities; the fused op O(t * E).
int64_t step_peak(int64_t t, AttentionImpl impl) {
  Tensor q = uniform({1, 1, t, 32}, -1, 1, 1, false).to(kFloat32).requires_grad_();
  Tensor k = uniform({1, 1, t, 32}, -1, 1, 2, false).to(kFloat32).requires_grad_();
  Tensor v = uniform({1, 1, t, 32}, -1, 1, 3, false).to(kFloat32).requires_grad_();
  memory::reset_peak_stats(kCPU);
  const int64_t before = memory::stats(kCPU).allocated_bytes.current;
  sum(scaled_dot_product_attention(q, k, v, {.causal = true, .impl = impl})).backward();
  return memory::stats(kCPU).allocated_bytes.peak - before;
}

TEST(FusedAttention, StepPeakGrowsLinearlyInTheSequence) {
  std::vector<int64_t> peaks;
  for (int64_t t : {512, 1024, 2048, 4096}) peaks.push_back(step_peak(t, AttentionImpl::Fused));
  for (size_t i = 1; i < peaks.size(); ++i) {
    // Doubling t at most doubles the peak (plus the fixed tile workspace);
    // a quadratic term would quadruple it.
    EXPECT_LE(peaks[i], 2 * peaks[i - 1] + (int64_t{1} << 20)) << i;
    EXPECT_GT(peaks[i], peaks[i - 1]) << i;
  }
  // The math path's [1024, 1024] probabilities alone are 4 MiB: more than the
  // fused step at 4096.
  EXPECT_LT(peaks[3], step_peak(1024, AttentionImpl::Math));
}

// Compression rounds the saved output but never the row log-sum-exp, whose
// error would scale every probability of the row: with q, k, v leaves (kept
// as they are) a compressed segment packs the output alone.
TEST(FusedAttention, CompressionLeavesTheLogSumExpExact) {
  Tensor q = uniform({2, 1, 512, 8}, -1, 1, 1, false).to(kFloat32).requires_grad_();
  memory::enable_timeline(kCPU, true);
  memory::clear_timeline(kCPU);
  CheckpointOptions options;
  options.policy = Policy::compress(kInt8);
  const Tensor y =
      checkpoint([](const Tensor& x) { return scaled_dot_product_attention(x, x, x); }, q, options);
  int64_t packed = 0;
  for (const memory::Event& e : memory::timeline(kCPU)) {
    packed += e.kind == memory::EventKind::Alloc && e.tag.starts_with("compress:");
  }
  memory::enable_timeline(kCPU, false);
  EXPECT_EQ(packed, 2);  // the output's int8 codes and their scales
  sum(y).backward();
  EXPECT_TRUE(q.grad().defined());
}

TEST(FusedAttention, RefusesWhatItCannotComputeAndKeepsWorking) {
  const Tensor q = uniform({2, 3, 4}, -1, 1, 1, false);
  const Tensor learned = uniform({3, 3}, -1, 1, 2);  // requires grad
  const std::string msg = error_message(
      [&] { scaled_dot_product_attention(q, q, q, AttentionOptions{.mask = learned}); });
  EXPECT_NE(msg.find("AttentionImpl::Math"), std::string::npos) << msg;
  EXPECT_THROW(scaled_dot_product_attention(q, q, q, AttentionOptions{.mask = ones({3, 3})}),
               Error);  // float32 mask, float64 q
  EXPECT_THROW(
      scaled_dot_product_attention(q, q, q, AttentionOptions{.mask = ones({4, 3, 3}, kFloat64)}),
      ShapeError);
  EXPECT_THROW(scaled_dot_product_attention(q, q, q, {.dropout_p = 1.5}), Error);
  // The math path takes the learned mask.
  Tensor y = scaled_dot_product_attention(q, q, q, {.mask = learned, .impl = AttentionImpl::Math});
  sum(y).backward();
  EXPECT_TRUE(learned.grad().defined());
  EXPECT_EQ(scaled_dot_product_attention(q, q, q).shape(), q.shape());
}

// The fused op saves q, k, v, the output and the row log-sum-exp: nothing of
// size [Lq, Lk].
TEST(FusedAttention, SavesNoScores) {
  const ops::OpDef& def = ops::op("scaled_dot_product_attention");
  EXPECT_EQ(def.save_inputs, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(def.save_outputs, (std::vector<int>{0, 1}));
  const Tensor q = uniform({2, 3, 10, 4}, -1, 1, 1, false);
  const std::vector<Tensor> all =
      ops::run_forward(def, {q, q, q, Tensor()}, ops::AttentionAttrs{.scale = 0.5});
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].shape(), (Shape{2, 3, 10}));
  EXPECT_EQ(all[1].dtype(), kFloat64);
}

// On the CPU the output [B, H, Lq, Ev] is laid out [B, Lq, H, Ev]: the heads
// merge back into [B, Lq, H x Ev] as a view, so the output projection saves
// no copy of the attention's output (as PyTorch's CPU kernel arranges). The
// values are the math path's (above) whatever the layout.
TEST(FusedAttention, HeadsMergeBackAsAViewOnTheCpu) {
  const Tensor q = uniform({2, 3, 10, 4}, -1, 1, 1, false);
  const Tensor v = uniform({2, 3, 10, 5}, -1, 1, 2, false);
  const Tensor out = scaled_dot_product_attention(q, q, v, {.causal = true});
  EXPECT_EQ(out.shape(), (Shape{2, 3, 10, 5}));
  EXPECT_TRUE(out.transpose(1, 2).is_contiguous());
  const Tensor merged = reshape(out.transpose(1, 2), {2, 10, 15});
  EXPECT_EQ(merged.data_ptr(), out.data_ptr());
  // Without heads (a 2-d call) there is nothing to reorder.
  const Tensor q2 = uniform({10, 4}, -1, 1, 3, false);
  EXPECT_TRUE(scaled_dot_product_attention(q2, q2, q2).is_contiguous());
}

}  // namespace
}  // namespace remat
