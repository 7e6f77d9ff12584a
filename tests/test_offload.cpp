// Offload and compression (Policy::offload, Policy::compress;
// docs/checkpointing.md "Offload and compression"): a segment keeps what its
// policy keeps in the device's offload pool or in fewer bits, and backward
// brings it back. Offloaded tensors come back bit for bit, so gradients are
// those of the same step without it, on the three example model families,
// composed with recomputation and nesting and under retain_graph; the pool is
// empty after the step; backward prefetches one segment ahead in the order it
// reads; an in-place change to a packed tensor is caught as for a plain one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "remat/remat.h"
#include "support/error_message.h"
#include "support/stacks.h"

using namespace remat;
using remat::testing::error_message;
using namespace remat::testing;

namespace {

using Grads = std::vector<std::vector<float>>;

CheckpointOptions with(Policy policy) {
  CheckpointOptions opts;
  opts.policy = std::move(policy);
  return opts;
}

const CheckpointPlan kBlock = CheckpointPlan::parse("block");

// After a first step, which makes the optimizer's state: every step
// compared then starts from the same memory.
Training warm(Stack s) {
  Training t(std::move(s));
  t.step();
  return t;
}

struct StepResult {
  Grads grads;
  int64_t peak = 0;              // allocated bytes on the device
  memory::OffloadStats offload;  // after the step
};

StepResult train(Training& t, const CheckpointPlan& plan, const CheckpointOptions& opts = {}) {
  const memory::OffloadStats before = memory::offload_stats(kCPU);
  StepResult r;
  r.peak = t.step(plan, opts);
  r.grads = gradients(t.s);
  r.offload = memory::offload_stats(kCPU);
  r.offload.copies_to_host -= before.copies_to_host;
  r.offload.bytes_to_host -= before.bytes_to_host;
  r.offload.copies_to_device -= before.copies_to_device;
  r.offload.bytes_to_device -= before.bytes_to_device;
  return r;
}

class OffloadStacks : public ::testing::TestWithParam<std::string> {
 protected:
  Training make() const {
    const std::string& name = GetParam();
    if (name == "mlp") return warm(mlp_stack());
    if (name == "transformer") return warm(transformer_stack(8));
    return warm(resnet_stack(16));
  }
};

TEST_P(OffloadStacks, GradientsAreBitwiseThoseOfThePlainStepAndThePoolEmpties) {
  Training t = make();
  const StepResult plain = train(t, CheckpointPlan::parse("none"));
  const std::vector<std::pair<std::string, Policy>> policies = {
      {"offload", Policy::offload()},
      {"recompute, inputs offloaded", Policy::recompute_all().offloaded()},
      {"matmuls kept, offloaded", Policy::save_ops({"matmul"}).offloaded()},
  };
  for (const auto& [name, policy] : policies) {
    SCOPED_TRACE(name);
    const StepResult r = train(t, kBlock, with(policy));
    EXPECT_EQ(r.grads, plain.grads);
    EXPECT_GT(r.offload.copies_to_host, 0);
    // Everything packed came back once, and nothing is left in the pool.
    EXPECT_EQ(r.offload.bytes_to_device, r.offload.bytes_to_host);
    EXPECT_EQ(r.offload.pool.allocated_bytes.current, 0);
    EXPECT_EQ(r.offload.bytes_in_flight, 0);
  }
}

TEST_P(OffloadStacks, OffloadingEverySegmentLowersTheDevicePeak) {
  Training t = make();
  const StepResult plain = train(t, CheckpointPlan::parse("none"));
  const StepResult offload = train(t, kBlock, with(Policy::offload()));
  // Backward holds two blocks' activations at most (one being read, one
  // prefetched), the plain step all of them.
  EXPECT_LT(offload.peak, plain.peak);
  EXPECT_GT(offload.offload.pool.allocated_bytes.peak, 0);
  EXPECT_GE(offload.offload.pool.allocated_bytes.peak, (plain.peak - offload.peak) / 2);
}

// The relative (L2) error of all the parameters' gradients as one vector (per
// parameter it is meaningless where the exact gradient is zero: attention's
// key bias, which softmax cancels).
double relative_error(const StepResult& exact, const StepResult& lossy) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < exact.grads.size(); ++i) {
    double e = 0, n = 0;
    for (size_t j = 0; j < exact.grads[i].size(); ++j) {
      e += std::pow(lossy.grads[i][j] - exact.grads[i][j], 2);
      n += std::pow(exact.grads[i][j], 2);
    }
    err += e;
    norm += n;
  }
  return std::sqrt(err / norm);
}

// Each format's gradient error stays within a bound of about twice what
// docs/checkpointing.md reports measured on these stacks, and the fewer the
// bits the lower the peak.
TEST_P(OffloadStacks, EachCompressionFormatKeepsTheStepWithinItsBoundAndLowersThePeak) {
  Training t = make();
  const StepResult plain = train(t, CheckpointPlan::parse("none"));
  const std::map<std::string, std::vector<std::pair<DType, double>>> bounds = {
      {"mlp", {{kBFloat16, 0.0002}, {kFloat8E4M3, 0.003}, {kInt8, 0.0005}}},
      {"transformer", {{kBFloat16, 0.001}, {kFloat8E4M3, 0.015}, {kInt8, 0.006}}},
      {"resnet", {{kBFloat16, 0.003}, {kFloat8E4M3, 0.035}, {kInt8, 0.01}}},
  };
  int64_t wider_peak = plain.peak;
  for (const auto& [format, bound] : bounds.at(GetParam())) {
    SCOPED_TRACE(dtype_name(format));
    const StepResult lossy = train(t, kBlock, with(Policy::compress(format)));
    const double error = relative_error(plain, lossy);
    std::printf("%s %s: gradient error %.5f, peak %lld of %lld\n", GetParam().c_str(),
                dtype_name(format), error, static_cast<long long>(lossy.peak),
                static_cast<long long>(plain.peak));
    EXPECT_GT(error, 0);  // lossy
    EXPECT_LT(error, bound);
    EXPECT_LT(lossy.peak, wider_peak);
    if (format == kBFloat16) wider_peak = lossy.peak;
  }
}

INSTANTIATE_TEST_SUITE_P(Stacks, OffloadStacks, ::testing::Values("mlp", "transformer", "resnet"),
                         [](const auto& param) { return param.param; });

// x -> x*1 -> three matmuls, [4, 8] to [4, 16], [4, 32] and back to [4, 8]:
// each keeps its input, 128, 256 and 512 bytes, read by backward in the
// reverse order.
Tensor chain(const Tensor& x, const std::vector<Tensor>& w) {
  Tensor h = x * 1.0;
  for (const Tensor& wi : w) h = matmul(h, wi);
  return h;
}

std::vector<Tensor> chain_weights() {
  manual_seed(3);
  return {randn({8, 16}).requires_grad_(), randn({16, 32}).requires_grad_(),
          randn({32, 8}).requires_grad_()};
}

TEST(Offload, BackwardPrefetchesOneSegmentAheadInTheOrderItReads) {
  const std::vector<Tensor> w = chain_weights();
  const Tensor x = randn({4, 8});
  memory::enable_timeline(kCPU, true);
  memory::clear_timeline(kCPU);
  {
    Tensor h = x;
    for (int s = 0; s < 3; ++s) {
      CheckpointOptions opts = with(Policy::offload());
      opts.tag = fmt::format("s{}", s);
      h = checkpoint([&w](const Tensor& in) { return chain(in, w); }, h, opts);
    }
    backward(sum(h));
  }
  std::vector<std::pair<std::string, int64_t>> prefetched;  // (segment, bytes) in order
  for (const memory::Event& e : memory::timeline(kCPU)) {
    if (e.kind == memory::EventKind::Alloc && e.tag.rfind("prefetch:", 0) == 0) {
      prefetched.emplace_back(e.tag.substr(9), e.requested);
    }
  }
  memory::enable_timeline(kCPU, false);
  // s2 when backward reaches it, s1 at once behind it, s0 when it reaches
  // s1; in each, the input of the last matmul first. In s0, x * 1.0 was not
  // recorded (x does not require grad): the first matmul's input has no
  // producer and stays where it is.
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"s2", 512}, {"s2", 256}, {"s2", 128}, {"s1", 512},
      {"s1", 256}, {"s1", 128}, {"s0", 512}, {"s0", 256}};
  EXPECT_EQ(prefetched, expected);
}

// With an entry between two offloading segments, backward does not run from
// the later one straight into the earlier: the earlier one's bytes come back
// when backward reaches it, after the entry's backward (its gradient, a
// non-prefetch allocation, comes between), not while that runs.
TEST(Offload, PrefetchesTheSegmentBeforeOnlyWhenItEndsWhereThisOneBegins) {
  const std::vector<Tensor> w = chain_weights();
  const Tensor x = randn({4, 8}).requires_grad_();
  memory::enable_timeline(kCPU, true);
  memory::clear_timeline(kCPU);
  {
    CheckpointOptions first = with(Policy::offload()), second = with(Policy::offload());
    first.tag = "s0";
    second.tag = "s1";
    Tensor h = checkpoint([&w](const Tensor& in) { return chain(in, w); }, x, first);
    h = h * 2.0;
    h = checkpoint([&w](const Tensor& in) { return chain(in, w); }, h, second);
    backward(sum(h));
  }
  std::vector<std::string> allocs;  // the tag of each allocation, "" where not a prefetch
  for (const memory::Event& e : memory::timeline(kCPU)) {
    if (e.kind != memory::EventKind::Alloc) continue;
    allocs.push_back(e.tag.rfind("prefetch:", 0) == 0 ? e.tag.substr(9) : "");
  }
  memory::enable_timeline(kCPU, false);
  const auto last_s1 = std::find(allocs.rbegin(), allocs.rend(), "s1").base();
  const auto first_s0 = std::find(allocs.begin(), allocs.end(), "s0");
  ASSERT_NE(first_s0, allocs.end());
  ASSERT_LT(last_s1 - allocs.begin(), first_s0 - allocs.begin());
  EXPECT_NE(std::find(last_s1, first_s0, ""), first_s0);  // h * 2.0's backward
}

// A weight's transpose is a view of a parameter: its bytes stay alive with
// the parameter, so packing them would only add a copy. Only the activation
// h (x * 1.0, [4, 8]) goes to the pool.
TEST(Offload, ParametersAndTheirViewsStayWhereTheyAre) {
  const std::vector<Tensor> w = chain_weights();
  const Tensor x = randn({4, 8}).requires_grad_();
  const memory::OffloadStats before = memory::offload_stats(kCPU);
  Tensor y = checkpoint(
      [&w](const Tensor& in) { return matmul(in * 1.0, w[0].transpose(0, 1).transpose(0, 1)); }, x,
      with(Policy::offload()));
  EXPECT_EQ(memory::offload_stats(kCPU).bytes_to_host - before.bytes_to_host, 4 * 8 * 4);
  backward(sum(y));
  EXPECT_TRUE(w[0].grad().defined());
}

// relu keeps its output, and the next segment's matmul keeps the same
// tensor as its input: it is packed once, by the first segment, and both
// read it back from one copy.
TEST(Offload, ATensorTwoSegmentsKeepIsPackedOnce) {
  manual_seed(5);
  const Tensor w = randn({8, 8}).requires_grad_();
  const Tensor x = randn({4, 8}).requires_grad_();
  auto block = [&w](const Tensor& in) { return relu(matmul(in, w)); };
  auto run = [&](bool offload) {
    w.impl().grad.reset();
    const memory::OffloadStats before = memory::offload_stats(kCPU);
    Tensor h = x;
    for (int s = 0; s < 3; ++s) {
      h = offload ? checkpoint(block, h, with(Policy::offload())) : block(h);
    }
    const int64_t packed = memory::offload_stats(kCPU).bytes_to_host - before.bytes_to_host;
    backward(sum(h));
    return std::pair{packed, w.grad().to_vector<float>()};
  };
  const auto [plain_packed, plain_grad] = run(false);
  const auto [packed, grad] = run(true);
  EXPECT_EQ(plain_packed, 0);
  EXPECT_EQ(packed, 3 * 4 * 8 * 4);  // the three relu outputs, once each
  EXPECT_EQ(grad, plain_grad);
}

TEST(Offload, RetainedGraphRepacksAfterEachBackward) {
  const std::vector<Tensor> w = chain_weights();
  const Tensor x = randn({4, 8});
  auto grads_of = [&w](const Tensor& loss, bool retain) {
    for (const Tensor& wi : w) wi.impl().grad.reset();
    backward(loss, {}, retain);
    Grads g;
    for (const Tensor& wi : w) g.push_back(wi.grad().to_vector<float>());
    return g;
  };
  const Grads plain = grads_of(sum(chain(chain(x, w), w)), false);
  Tensor loss = sum(checkpoint([&w](const Tensor& in) { return chain(chain(in, w), w); }, x,
                               with(Policy::offload())));
  const int64_t away = memory::offload_stats(kCPU).pool.allocated_bytes.current;
  EXPECT_GT(away, 0);
  EXPECT_EQ(grads_of(loss, true), plain);
  // The copies stay in the pool for the next backward; the device bytes went.
  EXPECT_EQ(memory::offload_stats(kCPU).pool.allocated_bytes.current, away);
  EXPECT_EQ(grads_of(loss, false), plain);
  EXPECT_EQ(memory::offload_stats(kCPU).pool.allocated_bytes.current, 0);
}

TEST(Offload, NestsWithRecomputationBothWays) {
  Training t = warm(mlp_stack(64));
  const StepResult plain = train(t, CheckpointPlan::parse("none"));
  // Offload segments inside recomputed groups, and recomputed blocks inside
  // offload groups.
  for (const bool offload_outside : {false, true}) {
    SCOPED_TRACE(offload_outside ? "offload outside" : "offload inside");
    const Policy outer = offload_outside ? Policy::offload() : Policy::recompute_all();
    const Policy inner = offload_outside ? Policy::recompute_all() : Policy::offload();
    const std::vector<std::function<Tensor(const Tensor&)>> blocks = t.s.blocks->functions();
    t.opt->zero_grad();
    manual_seed(9);
    {
      Tensor h = t.s.x;
      for (size_t g = 0; g < blocks.size(); g += 2) {
        h = checkpoint(
            [&](const Tensor& in) {
              Tensor out = checkpoint(blocks[g], in, with(inner));
              return checkpoint(blocks[g + 1], out, with(inner));
            },
            h, with(outer));
      }
      Tensor y = (*t.head)(reshape(h, {-1, h.shape().back()}));
      backward(mse_loss(y, t.target));
    }
    EXPECT_EQ(gradients(t.s), plain.grads);
    EXPECT_EQ(memory::offload_stats(kCPU).pool.allocated_bytes.current, 0);
  }
}

// gelu keeps its input, h; changing h in place afterwards (through a
// detached alias, which shares its version counter) must make backward
// throw, as it does without offload.
std::string in_place_error(const Policy* policy, bool change_after_segment) {
  const std::vector<Tensor> w = chain_weights();
  const Tensor x = randn({4, 8});
  Tensor h;
  auto fn = [&](const Tensor& in) {
    h = matmul(in * 1.0, w[0]);
    Tensor y = gelu(h);
    if (!change_after_segment) h.detach().mul_(2.0);
    return y;
  };
  Tensor y = policy ? checkpoint(fn, x, with(*policy)) : fn(x);
  if (change_after_segment) h.detach().mul_(2.0);
  try {
    backward(sum(y));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Offload, AnInPlaceChangeToAnOffloadedTensorIsCaughtAsForAPlainOne) {
  const Policy offload = Policy::offload();
  for (const bool after : {false, true}) {
    SCOPED_TRACE(after ? "after the segment" : "inside the segment");
    const std::string plain = in_place_error(nullptr, after);
    ASSERT_NE(plain.find("modified in place"), std::string::npos) << plain;
    EXPECT_EQ(in_place_error(&offload, after), plain);
  }
  // The library keeps working: the pool empties once the graphs are gone.
  EXPECT_EQ(memory::offload_stats(kCPU).pool.allocated_bytes.current, 0);
}

// Compression keeps exact zeros only where backward reads them. Four int8
// blocks (4 KiB, the least compression packs), each 100 first: +-1e-4 is
// far below half their smallest code (100 / 127). ReLU's mask (its saved
// output > 0) is still the exact one, while mul's saved factor, read for its
// values, rounds those to zero rather than up to the smallest code (a bias
// of 0.79 each).
TEST(Compress, KeepsExactZerosOnlyWhereBackwardReadsThem) {
  constexpr int64_t kBlocks = 4, kBlockSize = 256;
  std::vector<float> values(kBlocks * kBlockSize);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = i % kBlockSize == 0 ? 100.0f : (i % 2 == 0 ? 1e-4f : -1e-4f);
  }
  auto grads = [&](const std::optional<Policy>& policy) {
    Tensor x = from_vector(values, {kBlocks * kBlockSize});
    x.requires_grad_();
    Tensor w = full({kBlocks * kBlockSize}, 1.0);
    w.requires_grad_();
    auto fn = [&](const Tensor& in) { return relu(in * 1.0) + (in * 1.0) * w; };
    backward(sum(policy ? checkpoint(fn, x, with(*policy)) : fn(x)));
    return std::pair{x.grad().to_vector<float>(), w.grad().to_vector<float>()};
  };
  const auto [exact_x, exact_w] = grads(std::nullopt);
  const auto [x_grad, w_grad] = grads(Policy::compress(kInt8));
  EXPECT_EQ(x_grad, exact_x);  // relu's mask: 1 where x > 0, plus w's 1
  for (size_t i = 0; i < w_grad.size(); ++i) {
    if (i % kBlockSize == 0) {
      EXPECT_EQ(w_grad[i], 100.0f) << i;
    } else {
      ASSERT_NE(exact_w[i], 0.0f);
      EXPECT_EQ(w_grad[i], 0.0f) << i;
    }
  }
}

TEST(Compress, RejectsAFormatItDoesNotHave) {
  const std::string message = error_message([] { Policy::compress(kFloat16); });
  EXPECT_NE(message.find("formats are bfloat16, int8 and float8_e4m3, got float16"),
            std::string::npos)
      << message;
}

}  // namespace
