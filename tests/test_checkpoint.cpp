// checkpoint(): bitwise-equal gradients under every plan, memory proven
// through the allocator's statistics, replay counts, side effects, misuse.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/registry.h"
#include "remat/remat.h"

using namespace remat;

namespace {

// One MLP block of the issue's proof: Linear(d->4d, no bias), GELU,
// Linear(4d->d, no bias), dropout(0.1).
struct MlpStack {
  std::vector<Tensor> w1, w2;
  MlpStack(int blocks, int64_t d, uint64_t seed) {
    manual_seed(seed);
    for (int i = 0; i < blocks; ++i) {
      w1.push_back(randn({d, 4 * d}) * (1.0 / std::sqrt(static_cast<double>(d))));
      w2.push_back(randn({4 * d, d}) * (1.0 / std::sqrt(4.0 * static_cast<double>(d))));
      w1.back().requires_grad_();
      w2.back().requires_grad_();
    }
  }
  std::function<Tensor(const Tensor&)> block(size_t i) const {
    return [this, i](const Tensor& x) {
      return dropout(matmul(gelu(matmul(x, w1[i])), w2[i]), 0.1, true);
    };
  }
  std::vector<std::function<Tensor(const Tensor&)>> blocks() const {
    std::vector<std::function<Tensor(const Tensor&)>> fns;
    for (size_t i = 0; i < w1.size(); ++i) fns.push_back(block(i));
    return fns;
  }
  // Zeroes the gradients in place, keeping them allocated: a training step's
  // activation peak is measured on top of parameters and their gradients.
  void zero_grad() const {
    for (const auto* ws : {&w1, &w2}) {
      for (const Tensor& w : *ws) {
        if (w.grad().defined()) w.grad().zero_();
      }
    }
  }
  std::vector<std::vector<float>> grads() const {
    std::vector<std::vector<float>> out;
    for (const Tensor& w : w1) out.push_back(w.grad().to_vector<float>());
    for (const Tensor& w : w2) out.push_back(w.grad().to_vector<float>());
    return out;
  }
};

enum class Plan { None, EveryBlock, Sequential, Nested, SaveMatmul };

Tensor forward(const MlpStack& m, const Tensor& x, Plan plan) {
  auto fns = m.blocks();
  const int blocks = static_cast<int>(fns.size());
  switch (plan) {
    case Plan::None: {
      Tensor h = x;
      for (auto& f : fns) h = f(h);
      return h;
    }
    case Plan::EveryBlock:
    case Plan::SaveMatmul: {
      CheckpointOptions opts;
      if (plan == Plan::SaveMatmul) opts.policy = Policy::save_ops({"matmul"});
      Tensor h = x;
      for (auto& f : fns) h = checkpoint(f, h, opts);
      return h;
    }
    case Plan::Sequential:
      return checkpoint_sequential(fns, sqrt_segments(static_cast<size_t>(blocks)), x);
    case Plan::Nested: {
      Tensor h = x;
      for (int g = 0; g < blocks; g += 4) {
        h = checkpoint(
            [&fns, g, blocks](const Tensor& in) {
              Tensor out = in;
              for (int i = g; i < std::min(g + 4, blocks); ++i) out = checkpoint(fns[i], out);
              return out;
            },
            h);
      }
      return h;
    }
  }
  return {};
}

struct StepResult {
  std::vector<std::vector<float>> grads;
  float loss = 0;
  int64_t activation_peak = 0;  // peak allocated during the step minus before it
  CheckpointStats replays;
};

StepResult train_step(const MlpStack& m, const Tensor& x, Plan plan, uint64_t seed) {
  m.zero_grad();
  manual_seed(seed);  // the same dropout masks in every plan
  reset_checkpoint_stats();
  const int64_t before = memory::stats(kCPU).allocated_bytes.current;
  memory::reset_peak_stats(kCPU);
  Tensor loss = mean(forward(m, x, plan));
  loss.backward();
  StepResult r;
  r.activation_peak = memory::stats(kCPU).allocated_bytes.peak - before;
  r.loss = loss.item<float>();
  r.grads = m.grads();
  r.replays = checkpoint_stats();
  return r;
}

}  // namespace

TEST(Checkpoint, GradientsAreBitwiseIdenticalUnderEveryPlan) {
  MlpStack m(8, 16, 1);
  Tensor x = randn({32, 16});
  StepResult base = train_step(m, x, Plan::None, 5);
  for (Plan plan : {Plan::EveryBlock, Plan::Sequential, Plan::Nested, Plan::SaveMatmul}) {
    StepResult r = train_step(m, x, plan, 5);
    EXPECT_EQ(r.loss, base.loss) << static_cast<int>(plan);
    EXPECT_EQ(r.grads, base.grads) << static_cast<int>(plan);
    EXPECT_GT(r.replays.ops_replayed, 0) << static_cast<int>(plan);
  }
  EXPECT_EQ(base.replays.ops_replayed, 0);
}

TEST(Checkpoint, InputGradientFlowsThroughTheSegment) {
  Tensor x = randn({4, 3}, kFloat64);
  x.requires_grad_();
  Tensor w = randn({3, 3}, kFloat64);
  auto f = [&w](const Tensor& h) { return tanh(matmul(h, w)) * 2.0; };
  sum(f(f(x))).backward();
  std::vector<double> plain = x.grad().to_vector<double>();
  x.set_grad({});
  sum(checkpoint(f, checkpoint(f, x))).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), plain);
}

TEST(Checkpoint, GradModeOffJustRunsFn) {
  MlpStack m(1, 8, 2);
  Tensor y;
  {
    NoGradGuard g;
    y = checkpoint(m.block(0), randn({2, 8}));
  }
  EXPECT_FALSE(y.requires_grad());
}

namespace {

// The analytical model of docs/checkpointing.md for the MLP stack. Per
// block, the plain tape keeps the first matmul's output and the GELU output
// (H bytes each, for the matmul and GELU backward) and the block output (X,
// the next block's matmul input); dropout regenerates its mask from Philox
// and keeps nothing. A plan is a list of segments in forward order; a segment
// is either a run of blocks kept as in the plain tape, or a checkpointed
// segment holding further segments. Backward visits the segments last to
// first; while it is inside segment j of a level, the outputs of segments
// 1..j-1 of that level are alive (X each) and segment j costs what its own
// contents cost (the loss reads the step's output and does not keep it).
// Backward's own working set adds T = H + X + W: the gradient of a hidden, of
// a block output and of one weight, alive together at the second matmul's
// backward.
struct PlanNode {
  int blocks = 0;                  // a run of blocks recorded plainly
  std::vector<PlanNode> children;  // or a checkpointed segment of these
};

struct MlpSizes {
  double X, H, W;  // block output, hidden, weight bytes
};

double model_cost(const std::vector<PlanNode>& level, const MlpSizes& s) {
  double worst = 0;
  for (size_t j = 0; j < level.size(); ++j) {
    const PlanNode& n = level[j];
    const double inside =
        n.children.empty() ? n.blocks * 2 * s.H + (n.blocks - 1) * s.X : model_cost(n.children, s);
    worst = std::max(worst, static_cast<double>(j) * s.X + inside);
  }
  return worst;
}

double model_activation_peak(const std::vector<PlanNode>& plan, const MlpSizes& s) {
  return model_cost(plan, s) + (s.H + s.X + s.W);
}

std::vector<PlanNode> runs(const std::vector<int>& sizes, bool checkpointed) {
  std::vector<PlanNode> level;
  for (int k : sizes) {
    level.push_back(checkpointed ? PlanNode{0, {PlanNode{k, {}}}} : PlanNode{k, {}});
  }
  return level;
}

}  // namespace

TEST(Checkpoint, ProvesTheMemorySavingsOfTheIssue) {
  // 24 blocks of Linear(256->1024), GELU, Linear(1024->256), dropout(0.1) at batch 2048.
  const int blocks = 24;
  const int64_t d = 256, batch = 2048;
  MlpStack m(blocks, d, 3);
  Tensor x = randn({batch, d});
  train_step(m, x, Plan::None, 9);  // warm-up: gradients exist, the cache is populated
  StepResult none = train_step(m, x, Plan::None, 9);
  StepResult every = train_step(m, x, Plan::EveryBlock, 9);
  StepResult seq = train_step(m, x, Plan::Sequential, 9);
  StepResult nested = train_step(m, x, Plan::Nested, 9);

  const MlpSizes sizes{static_cast<double>(batch * d * 4), static_cast<double>(batch * 4 * d * 4),
                       static_cast<double>(d * 4 * d * 4)};
  std::vector<PlanNode> nested_plan;
  for (int g = 0; g < blocks / 4; ++g) nested_plan.push_back({0, runs({1, 1, 1, 1}, true)});
  const struct {
    const char* name;
    const StepResult& run;
    double model;
  } plans[] = {
      {"none", none, model_activation_peak(runs({blocks}, false), sizes)},
      {"every block", every, model_activation_peak(runs(std::vector<int>(blocks, 1), true), sizes)},
      {"sqrt", seq, model_activation_peak(runs({5, 5, 5, 5, 4}, true), sizes)},
      {"nested", nested, model_activation_peak(nested_plan, sizes)},
  };
  const double mib = 1 << 20;
  for (const auto& p : plans) {
    const auto measured = static_cast<double>(p.run.activation_peak);
    std::printf("%-12s activation peak %6.1f MiB, model %6.1f MiB\n", p.name, measured / mib,
                p.model / mib);
    EXPECT_NEAR(measured, p.model, 0.15 * p.model) << p.name;
  }
  const auto none_peak = static_cast<double>(none.activation_peak);
  EXPECT_LE(every.activation_peak, 0.30 * none_peak);
  EXPECT_LE(seq.activation_peak, 0.40 * none_peak);
  EXPECT_LE(nested.activation_peak, 0.30 * none_peak);
  EXPECT_EQ(every.grads, none.grads);
  EXPECT_EQ(seq.grads, none.grads);
  EXPECT_EQ(nested.grads, none.grads);
}

namespace {

// A pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)).
struct TransformerStack {
  int64_t d, heads;
  std::vector<std::vector<Tensor>> params;  // per block: ln1 w,b, wq, wk, wv, wo, ln2 w,b, w1, w2
  TransformerStack(int blocks, int64_t d_model, int64_t n_heads, uint64_t seed)
      : d(d_model), heads(n_heads) {
    manual_seed(seed);
    const double s = 1.0 / std::sqrt(static_cast<double>(d));
    for (int i = 0; i < blocks; ++i) {
      std::vector<Tensor> p{ones({d}),
                            zeros({d}),
                            randn({d, d}) * s,
                            randn({d, d}) * s,
                            randn({d, d}) * s,
                            randn({d, d}) * s,
                            ones({d}),
                            zeros({d}),
                            randn({d, 4 * d}) * s,
                            randn({4 * d, d}) * (s / 2)};
      for (Tensor& t : p) t.requires_grad_();
      params.push_back(p);
    }
  }
  Tensor block(size_t i, const Tensor& x) const {
    const auto& p = params[i];
    const int64_t b = x.size(0), t = x.size(1), hd = d / heads;
    auto split_heads = [&](const Tensor& h) {
      return h.reshape({b, t, heads, hd}).transpose(1, 2);
    };
    Tensor h = layer_norm(x, p[0], p[1]);
    Tensor attn =
        scaled_dot_product_attention(split_heads(matmul(h, p[2])), split_heads(matmul(h, p[3])),
                                     split_heads(matmul(h, p[4])), true);
    Tensor y = x + matmul(attn.transpose(1, 2).reshape({b, t, d}), p[5]);
    return y + matmul(gelu(matmul(layer_norm(y, p[6], p[7]), p[8])), p[9]);
  }
};

struct TransformerRun {
  int64_t activation_peak = 0;
  int64_t ops_replayed = 0;
  std::vector<float> grad;
};

TransformerRun transformer_step(const TransformerStack& m, const Tensor& x,
                                std::optional<CheckpointOptions> opts) {
  for (auto& p : m.params) {
    for (const Tensor& t : p) t.set_grad({});
  }
  reset_checkpoint_stats();
  const int64_t before = memory::stats(kCPU).allocated_bytes.current;
  memory::reset_peak_stats(kCPU);
  Tensor h = x;
  for (size_t i = 0; i < m.params.size(); ++i) {
    auto f = [&m, i](const Tensor& in) { return m.block(i, in); };
    h = opts ? checkpoint(f, h, *opts) : f(h);
  }
  mean(h).backward();
  return {memory::stats(kCPU).allocated_bytes.peak - before, checkpoint_stats().ops_replayed,
          m.params[0][2].grad().to_vector<float>()};
}

}  // namespace

TEST(Checkpoint, SelectivePolicyKeepsMatmulsAndRecomputesLess) {
  TransformerStack m(4, 64, 4, 11);
  Tensor x = randn({4, 64, 64});
  transformer_step(m, x, std::nullopt);  // warm-up
  TransformerRun none = transformer_step(m, x, std::nullopt);
  TransformerRun all = transformer_step(m, x, CheckpointOptions{});
  CheckpointOptions selective;
  selective.policy = Policy::save_ops({"matmul"});
  TransformerRun sel = transformer_step(m, x, selective);
  std::printf(
      "transformer activation peak KiB: none %lld, recompute_all %lld, save matmul %lld; "
      "replayed ops: all %lld, selective %lld\n",
      static_cast<long long>(none.activation_peak >> 10),
      static_cast<long long>(all.activation_peak >> 10),
      static_cast<long long>(sel.activation_peak >> 10), static_cast<long long>(all.ops_replayed),
      static_cast<long long>(sel.ops_replayed));
  EXPECT_LT(all.activation_peak, sel.activation_peak);
  EXPECT_LT(sel.activation_peak, none.activation_peak);
  EXPECT_LT(sel.ops_replayed, all.ops_replayed);
  EXPECT_GT(sel.ops_replayed, 0);
  EXPECT_EQ(sel.grad, none.grad);
  EXPECT_EQ(all.grad, none.grad);
}

// A segment that begins with a nested one and goes on with plain ops: the
// outer replay regenerates the inner segment's output, and the inner one its
// own insides (the replay's walk used to stop at the outer segment's first
// direct entry, missing the inner segment that came before it).
TEST(Checkpoint, SegmentBeginningWithANestedOneGivesTheSameGradients) {
  Tensor w = randn({8, 8});
  w.requires_grad_();
  const Tensor x = randn({4, 8});
  auto inner = [&](const Tensor& in) { return sigmoid(matmul(in, w)); };
  auto outer = [&](const Tensor& in) { return tanh(matmul(checkpoint(inner, in), w)); };
  backward(sum(outer(x)));
  const std::vector<float> want = w.grad().to_vector<float>();
  w.set_grad(Tensor());
  backward(sum(checkpoint(outer, x)));
  EXPECT_EQ(w.grad().to_vector<float>(), want);
}

TEST(Checkpoint, NestedInnerSegmentsReplayOnlyWhenBackwardReachesThem) {
  MlpStack m(8, 8, 4);
  Tensor x = randn({4, 8});
  reset_checkpoint_stats();
  Tensor y = forward(m, x, Plan::Nested);  // 2 outer segments of 4 inner ones
  EXPECT_EQ(checkpoint_stats().segments_replayed, 0);
  mean(y).backward();
  // Each outer segment replays once, each inner one once: 2 + 8.
  EXPECT_EQ(checkpoint_stats().segments_replayed, 10);
}

TEST(Checkpoint, RetainGraphReplaysAgainAndGivesTheSameGradients) {
  MlpStack m(3, 8, 6);
  Tensor x = randn({4, 8});
  reset_checkpoint_stats();
  Tensor loss = mean(forward(m, x, Plan::EveryBlock));
  loss.backward({}, true);
  auto first = m.grads();
  const int64_t replays = checkpoint_stats().segments_replayed;
  m.zero_grad();
  loss.backward();
  EXPECT_EQ(m.grads(), first);
  EXPECT_EQ(checkpoint_stats().segments_replayed, 2 * replays);
}

// on_backward runs once per backward pass that reaches the segment, before
// anything in it is regenerated, and not in the forward.
TEST(Checkpoint, BeforeReplayRunsOncePerBackwardBeforeTheReplay) {
  MlpStack m(3, 8, 6);
  Tensor x = randn({4, 8});
  int calls = 0;
  int64_t replayed_before = -1;
  CheckpointOptions opts;
  opts.on_backward = [&] {
    ++calls;
    replayed_before = checkpoint_stats().ops_replayed;
  };
  reset_checkpoint_stats();
  Tensor loss = mean(checkpoint_blocks(m.blocks(), x, CheckpointPlan::parse("every-3"), opts));
  EXPECT_EQ(calls, 0);
  loss.backward({}, true);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(replayed_before, 0);
  EXPECT_GT(checkpoint_stats().ops_replayed, 0);
  loss.backward();
  EXPECT_EQ(calls, 2);
}

TEST(Checkpoint, BackwardTwiceWithoutRetainGraphThrows) {
  MlpStack m(2, 8, 6);
  Tensor loss = mean(forward(m, randn({4, 8}), Plan::EveryBlock));
  loss.backward();
  try {
    loss.backward();
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("second time"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, SegmentInputModifiedInPlaceAfterTheSegmentIsCaught) {
  MlpStack m(1, 8, 7);
  Tensor x = randn({4, 8});
  x.requires_grad_();
  Tensor h = x * 2.0;  // made by op 'mul_scalar', read by the segment
  Tensor loss = mean(checkpoint(m.block(0), h));
  {
    NoGradGuard g;
    h.detach().add_(1.0);
  }
  try {
    loss.backward();
    FAIL() << "expected Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("modified in place"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mul_scalar"), std::string::npos) << msg;
    EXPECT_NE(msg.find("version 0, now at version 1"), std::string::npos) << msg;
  }
}

TEST(Checkpoint, DebugModeCatchesAReplayThatDiverges) {
  // Bytes changed behind the version counter's back (a raw pointer write)
  // make the replay differ from the record; debug mode names the op.
  Tensor w = randn({8, 8});
  w.requires_grad_();
  CheckpointOptions opts;
  opts.debug = true;
  opts.tag = "probe";
  Tensor loss = mean(checkpoint([&w](const Tensor& in) { return relu(tanh(matmul(in, w))); },
                                randn({4, 8}), opts));
  w.data<float>()[0] += 1.0f;
  try {
    loss.backward();
    FAIL() << "expected Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("diverged"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'tanh'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("entry 1 of checkpoint segment 'probe'"), std::string::npos) << msg;
  }
}

TEST(Checkpoint, NoGradInsideFnBehavesAsWithoutCheckpoint) {
  Tensor w = randn({4, 4}, kFloat64);
  w.requires_grad_();
  Tensor x = randn({2, 4}, kFloat64);
  auto f = [&w](const Tensor& in) {
    Tensor scale;
    {
      NoGradGuard g;
      scale = exp(matmul(in, w.detach()));  // a constant for autograd
    }
    return matmul(in, w) * scale;
  };
  sum(f(x)).backward();
  auto plain = w.grad().to_vector<double>();
  w.set_grad({});
  sum(checkpoint(f, x)).backward();
  EXPECT_EQ(w.grad().to_vector<double>(), plain);
}

TEST(Checkpoint, BatchNormRunningStatsMoveOncePerRealForward) {
  // The running statistics are a side effect outside the tape: a replay must
  // not move them again, and the gradients must match the plain program.
  auto run = [](bool checkpointed, std::vector<double>& grad) {
    manual_seed(11);
    Tensor x = randn({4, 3, 5, 5}, kFloat64);
    Tensor w = randn({3}, kFloat64);
    w.requires_grad_();
    Tensor running_mean = zeros({3}, kFloat64), running_var = ones({3}, kFloat64);
    auto fn = [&](const Tensor& in) {
      return relu(batch_norm(in, running_mean, running_var, w, Tensor(), true, 0.1, 1e-5));
    };
    Tensor y = checkpointed ? checkpoint(fn, x) : fn(x);
    const auto mean_after_forward = running_mean.to_vector<double>();
    const auto var_after_forward = running_var.to_vector<double>();
    sum(y * y).backward();
    EXPECT_EQ(running_mean.to_vector<double>(), mean_after_forward);
    EXPECT_EQ(running_var.to_vector<double>(), var_after_forward);
    grad = w.grad().to_vector<double>();
    return std::pair{mean_after_forward, var_after_forward};
  };
  std::vector<double> plain_grad, checkpoint_grad;
  const auto plain = run(false, plain_grad);
  reset_checkpoint_stats();
  const auto checkpointed = run(true, checkpoint_grad);
  EXPECT_EQ(checkpoint_stats().segments_replayed, 1);  // the replay did run
  EXPECT_EQ(checkpointed, plain);
  EXPECT_EQ(checkpoint_grad, plain_grad);
  EXPECT_NE(plain.first, std::vector<double>(3, 0.0));  // the forward did move them
}

TEST(Checkpoint, NamedPlansParseRoundTripAndRejectUnknownNames) {
  for (const char* name :
       {"none", "block", "every-2", "every-3", "alternate", "sqrt", "selective", "nested",
        "offload", "offload-inputs", "compress-bf16", "compress-int8", "compress-fp8"}) {
    EXPECT_EQ(CheckpointPlan::parse(name).name(), name);
  }
  for (const char* bad : {"", "every-0", "every-", "every-2x", "blocks", "compress-fp16"}) {
    try {
      CheckpointPlan::parse(bad);
      FAIL() << "expected Error for '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("expected one of"), std::string::npos) << e.what();
    }
  }
}

// The plans that give their segments a policy say which, in the schedule
// (what checkpoint_blocks runs) and in its description.
TEST(Checkpoint, PlansWithTheirOwnPolicyPutItOnEverySegment) {
  const std::pair<const char*, Policy> plans[] = {
      {"selective", Policy::save_ops({"matmul"})},
      {"offload", Policy::offload()},
      {"offload-inputs", Policy::recompute_all().offloaded()},
      {"compress-bf16", Policy::compress(kBFloat16)},
      {"compress-int8", Policy::compress(kInt8)},
      {"compress-fp8", Policy::compress(kFloat8E4M3)}};
  for (const auto& [name, policy] : plans) {
    SCOPED_TRACE(name);
    const CheckpointPlan plan = CheckpointPlan::parse(name);
    EXPECT_EQ(plan.segment_policy(), policy);
    const CheckpointSchedule s = plan.schedule(3);
    ASSERT_EQ(s.items.size(), 3u);
    for (const auto& item : s.items) EXPECT_EQ(item.policy, policy);
    EXPECT_NE(s.describe().find("block 2: segment [2-2] " + policy.str()), std::string::npos)
        << s.describe();
  }
  EXPECT_EQ(Policy::compress(kInt8).str(), "Policy::compress(int8)");
  EXPECT_EQ(Policy::save_ops({"matmul", "relu"}).offloaded().str(),
            "Policy::save_ops({matmul, relu}).offloaded()");
  EXPECT_FALSE(CheckpointPlan::parse("block").segment_policy());
}

TEST(Checkpoint, EveryNamedPlanGivesTheSameGradientsAndReplaysWhatItDrops) {
  MlpStack m(7, 16, 12);
  Tensor x = randn({8, 16});
  auto step = [&](const CheckpointPlan& plan) {
    m.zero_grad();
    manual_seed(21);
    reset_checkpoint_stats();
    mean(checkpoint_blocks(m.blocks(), x, plan)).backward();
    return std::pair{m.grads(), checkpoint_stats().segments_replayed};
  };
  const auto [plain, plain_replays] = step(CheckpointPlan::parse("none"));
  EXPECT_EQ(plain_replays, 0);
  // Segments replayed per plan for 7 blocks: round(sqrt(7)) = 3 groups.
  // The offload plan keeps everything (in the pool) and replays nothing.
  const std::pair<const char*, int64_t> plans[] = {
      {"block", 7},     {"every-2", 4},    {"alternate", 4}, {"sqrt", 3},
      {"selective", 7}, {"nested", 3 + 7}, {"offload", 0},   {"offload-inputs", 7}};
  for (const auto& [name, segments] : plans) {
    const auto [grads, replays] = step(CheckpointPlan::parse(name));
    EXPECT_EQ(grads, plain) << name;
    EXPECT_EQ(replays, segments) << name;
  }
}
