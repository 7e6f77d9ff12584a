// The tape, the engine and checkpoint() under misuse: graphs that span
// threads, graphs a million entries deep, in-place writes the replay cannot
// see, auxiliary backward calls, and segments with several outputs. Each test
// failed before its fix (issue 12).
#include <gtest/gtest.h>

#include <thread>

#include "autograd/node.h"
#include "remat/nn/layers.h"
#include "remat/remat.h"
#include "support/error_message.h"

using namespace remat;

namespace {

using remat::testing::error_message;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST(GraphFaults, GraphBuiltAcrossThreadsGivesTheSingleThreadGradient) {
  // Entries of two threads used to share sequence numbers, which the engine
  // keys pending entries by: their gradients were silently mixed.
  auto run = [](bool two_threads) {
    Tensor x = from_vector(std::vector<double>{0.1, -0.4, 0.7, 1.3}, {4});
    Tensor e = from_vector(std::vector<double>{0.5, 0.25, -1.0, 2.0}, {4});
    x.requires_grad_();
    e.requires_grad_();
    Tensor a;
    auto chain = [&] {
      a = tanh(x);
      for (int i = 0; i < 5; ++i) a = a * 1.5 + sigmoid(a);
    };
    if (two_threads) {
      std::thread worker(chain);
      worker.join();
    } else {
      chain();
    }
    // The main thread's own entries: several, so their numbers overlap the worker's.
    Tensor b = e;
    for (int i = 0; i < 5; ++i) b = b * 0.5 + exp(b * 0.1);
    sum(a * 3.0 + b).backward();
    return std::pair{x.grad().to_vector<double>(), e.grad().to_vector<double>()};
  };
  EXPECT_EQ(run(true), run(false));
}

TEST(GraphFaults, EntrySequenceNumbersAreUniqueAcrossThreads) {
  std::vector<uint64_t> seen(2000);
  std::thread worker([&] {
    for (size_t i = 0; i < 1000; ++i) seen[i] = autograd::next_sequence();
  });
  for (size_t i = 1000; i < 2000; ++i) seen[i] = autograd::next_sequence();
  worker.join();
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end());
}

// A chain of `length` entries, each one op on a small tensor.
Tensor deep_chain(const Tensor& x, int64_t length) {
  Tensor h = x;
  for (int64_t i = 0; i < length; ++i) h = h * 1.0;
  return h;
}

constexpr int64_t kMillion = 1'000'000;

TEST(GraphFaults, AMillionEntryChainIsFreedWithoutBackward) {
  // ~Node used to free its producer inside its own destructor: one stack
  // frame per entry.
  Tensor x = ones({1});
  x.requires_grad_();
  const int64_t before = autograd::live_entries();
  {
    Tensor y = deep_chain(x, kMillion);
    EXPECT_EQ(autograd::live_entries(), before + kMillion);
  }
  EXPECT_EQ(autograd::live_entries(), before);
}

TEST(GraphFaults, AMillionEntryChainBackpropagatesAndIsFreed) {
  Tensor x = ones({1});
  x.requires_grad_();
  const int64_t before = autograd::live_entries();
  {
    Tensor y = deep_chain(x, kMillion);
    y.backward();
  }
  EXPECT_EQ(x.grad().item<float>(), 1.0f);
  EXPECT_EQ(autograd::live_entries(), before);
}

TEST(GraphFaults, AMillionEntrySegmentReplays) {
  // The replay's dependency walk used to recurse once per entry.
  Tensor x = ones({1});
  x.requires_grad_();
  reset_checkpoint_stats();
  {
    // The square saves its operand, the chain's end, which the replay
    // regenerates by running the whole chain again.
    Tensor y = checkpoint(
        [](const Tensor& in) {
          Tensor h = deep_chain(in, kMillion);
          return h * h;
        },
        x);
    y.backward();
  }
  EXPECT_EQ(x.grad().item<float>(), 2.0f);
  EXPECT_EQ(checkpoint_stats().ops_replayed, kMillion);
}

TEST(GraphFaults, BatchNormUsedTwiceInsideCheckpointReplays) {
  // The segment held the running statistics for a replay that, in training
  // mode, never reads them, then blamed the user for their second update.
  auto run = [](bool checkpointed) {
    manual_seed(3);
    nn::BatchNorm2d bn(3);
    Tensor x = randn({4, 3, 5, 5});
    x.requires_grad_();
    auto siamese = [&bn](const Tensor& in) { return bn.forward(relu(bn.forward(in))); };
    Tensor y = checkpointed ? checkpoint(siamese, x) : siamese(x);
    {
      NoGradGuard no_grad;
      bn.forward(x);  // one more training-mode forward before backward
    }
    sum(y * y).backward();
    return std::tuple{x.grad().to_vector<float>(), bn.weight().grad().to_vector<float>(),
                      bn.running_mean().to_vector<float>(), bn.running_var().to_vector<float>()};
  };
  EXPECT_EQ(run(true), run(false));
}

TEST(GraphFaults, EvalModeBatchNormInsideCheckpointStillChecksItsRunningStats) {
  // In eval mode the replay does read the running statistics: changing them
  // between forward and backward stays an error.
  nn::BatchNorm2d bn(2);
  bn.eval();
  Tensor x = randn({2, 2, 3, 3});
  x.requires_grad_();
  Tensor y = checkpoint([&bn](const Tensor& in) { return tanh(bn.forward(in)); }, x);
  {
    NoGradGuard no_grad;
    bn.running_mean().add_(1.0);
  }
  const std::string msg = error_message([&] { sum(y).backward(); });
  EXPECT_TRUE(contains(msg, "modified in place")) << msg;
  EXPECT_TRUE(contains(msg, "'batch_norm'")) << msg;
}

TEST(GraphFaults, BackwardInsideACheckpointedFunctionIsRejectedClearly) {
  Tensor w = randn({4, 4});
  w.requires_grad_();
  Tensor x = randn({2, 4});
  CheckpointOptions opts;
  opts.tag = "aux";
  const std::string msg = error_message([&] {
    checkpoint(
        [&w](const Tensor& in) {
          Tensor h = tanh(matmul(in, w));
          mean(h).backward();  // an auxiliary loss
          return h;
        },
        x, opts);
  });
  EXPECT_TRUE(contains(msg, "backward() inside checkpoint()")) << msg;
  EXPECT_TRUE(contains(msg, "'aux'")) << msg;
  // Nothing was left half done: the same segment without the auxiliary
  // backward gives the plain gradient.
  auto block = [&w](const Tensor& in) { return tanh(matmul(in, w)); };
  sum(block(x)).backward();
  const auto plain = w.grad().to_vector<float>();
  w.set_grad({});
  sum(checkpoint(block, x)).backward();
  EXPECT_EQ(w.grad().to_vector<float>(), plain);
}

TEST(GraphFaults, InPlaceWriteThroughDetachToAnUnsavedIntermediateIsCaught) {
  // `h` is saved by no op, so no dropped slot watched it: the replay
  // recomputed it without the write and the gradients differed silently.
  Tensor w = randn({3, 3});
  w.requires_grad_();
  Tensor x = randn({2, 3});
  const std::string msg = error_message([&] {
    checkpoint(
        [&w](const Tensor& in) {
          Tensor h = matmul(in, w);
          h.detach().mul_(0.0);
          return exp(h + 1.0);
        },
        x);
  });
  EXPECT_TRUE(contains(msg, "modified in place before this read")) << msg;
  EXPECT_TRUE(contains(msg, "'matmul'")) << msg;
  EXPECT_TRUE(contains(msg, "'add_scalar'")) << msg;
}

TEST(GraphFaults, InPlaceWriteAfterTheLastReadInsideTheSegmentIsHarmless) {
  // The replay recomputes what the segment's readers saw: a write after the
  // last read changes nothing they used, so it is allowed.
  Tensor w = randn({3, 3}, kFloat64);
  w.requires_grad_();
  Tensor x = randn({2, 3}, kFloat64);
  auto block = [&w](const Tensor& in, bool scribble) {
    Tensor h = matmul(in, w);
    Tensor y = exp(h * 0.5);
    if (scribble) h.detach().mul_(0.0);
    return y;
  };
  sum(block(x, false)).backward();
  const auto plain = w.grad().to_vector<double>();
  w.set_grad({});
  sum(checkpoint([&](const Tensor& in) { return block(in, true); }, x)).backward();
  EXPECT_EQ(w.grad().to_vector<double>(), plain);
}

TEST(GraphFaults, BackwardThroughOneOutputReplaysOnlyItsBranch) {
  Tensor w1 = randn({4, 4}), w2 = randn({4, 4});
  w1.requires_grad_();
  w2.requires_grad_();
  Tensor x = randn({2, 4});
  x.requires_grad_();
  auto two_branches = [&](const std::vector<Tensor>& in) {
    Tensor trunk = tanh(in[0]);
    Tensor a = sigmoid(matmul(trunk, w1));
    Tensor b = sigmoid(tanh(matmul(trunk, w2)));
    return std::vector<Tensor>{a, b};
  };
  std::vector<Tensor> out = checkpoint(two_branches, {x});
  reset_checkpoint_stats();
  sum(out[0]).backward(Tensor(), /*retain_graph=*/true);
  // Only the trunk's tanh: the first branch's matmul reads it, sigmoid saves
  // its own output, which is the live out[0]. The second branch (3 entries)
  // is left alone.
  EXPECT_EQ(checkpoint_stats().ops_replayed, 1);
  EXPECT_TRUE(w1.grad().defined());
  EXPECT_FALSE(w2.grad().defined());
  // The other branch is replayed when its own backward comes, with the
  // gradient of the plain program.
  reset_checkpoint_stats();
  sum(out[1]).backward();
  EXPECT_EQ(checkpoint_stats().ops_replayed, 3);  // tanh, matmul, tanh
  const auto checkpointed = w2.grad().to_vector<float>();
  w2.set_grad({});
  std::vector<Tensor> plain = two_branches({x});
  sum(plain[1]).backward();
  EXPECT_EQ(w2.grad().to_vector<float>(), checkpointed);
}

TEST(GraphFaults, ALiveSegmentOutputIsReusedNotRegenerated) {
  // exp saves its output; the caller still holds that output, so the replay
  // takes it instead of making a second copy.
  Tensor x = randn({256, 256});
  x.requires_grad_();
  Tensor y = checkpoint([](const Tensor& in) { return exp(tanh(in)); }, x);
  reset_checkpoint_stats();
  sum(y).backward();
  EXPECT_EQ(checkpoint_stats().ops_replayed, 1);  // tanh only: exp is not run again
  Tensor plain_x = x.detach();
  plain_x.requires_grad_();
  sum(exp(tanh(plain_x))).backward();
  EXPECT_EQ(x.grad().to_vector<float>(), plain_x.grad().to_vector<float>());
}

TEST(GraphFaults, EveryPlanOfNoBlocksReturnsItsInput) {
  Tensor x = randn({2, 3});
  for (const char* name :
       {"none", "block", "every-2", "alternate", "sqrt", "selective", "nested"}) {
    Tensor y = checkpoint_blocks({}, x, CheckpointPlan::parse(name));
    EXPECT_EQ(y.impl_ptr(), x.impl_ptr()) << name;
  }
}

TEST(GraphFaults, SaveOpsRejectsAnUnknownOpName) {
  const std::string msg = error_message([] { Policy::save_ops({"matmul", "matmull"}); });
  EXPECT_TRUE(contains(msg, "'matmull'")) << msg;
  EXPECT_TRUE(contains(msg, "softmax")) << msg;  // the list of ops
  EXPECT_EQ(Policy::save_ops({"matmul"}).saved_ops().count("matmul"), 1u);
}
