// The tape and the backward engine: accumulation, reuse, retain_graph, the
// errors users hit, and saved tensors freed as backward goes.
#include <gtest/gtest.h>

#include "autograd/node.h"
#include "remat/remat.h"

using namespace remat;

namespace {
Tensor leaf(std::vector<double> v, Shape shape) {
  Tensor t = from_vector(v, shape);
  t.requires_grad_();
  return t;
}
std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no exception)";
}
}  // namespace

TEST(Autograd, AccumulatesAcrossBranches) {
  Tensor x = leaf({1, 2}, {2});
  // y = x*x + 3x: both branches reach x.
  Tensor y = sum(x * x + x * 3.0);
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5, 7}));
}

TEST(Autograd, ReusedIntermediate) {
  Tensor x = leaf({2}, {1});
  Tensor h = x * x;           // 4
  Tensor y = sum(h * h + h);  // x^4 + x^2 -> 4x^3 + 2x = 36
  y.backward();
  EXPECT_DOUBLE_EQ(x.grad().item<double>(), 36);
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = leaf({1, 1}, {2});
  sum(x * 2.0).backward();
  sum(x * 3.0).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5, 5}));
  x.set_grad({});
  EXPECT_FALSE(x.grad().defined());
}

// The leaf's first gradient is the buffer the backward computed: no second
// copy of it exists at any time (the old engine cloned it: peak 2x).
TEST(Autograd, FirstLeafGradientIsTakenNotCopied) {
  Tensor x = randn({1 << 16});
  x.requires_grad_();
  Tensor loss = sum(x * 2.0);
  const int64_t before = memory::stats(kCPU).allocated_bytes.current;
  memory::PeakWatch watch(kCPU);
  loss.backward();
  EXPECT_LT(watch.peak() - before, x.nbytes() * 3 / 2);
  EXPECT_EQ(x.grad().to_vector<float>(), std::vector<float>(1 << 16, 2.0f));
}

// A linear layer's product with its weight's transpose gives the weight a
// gradient in the weight's own (contiguous) layout, which the engine then
// takes: no transposed copy of the weight's size exists during backward.
TEST(Autograd, WeightOfATransposedProductGetsItsGradientInItsLayout) {
  Tensor w = randn({512, 256});
  w.requires_grad_();
  Tensor x = randn({8, 256});
  Tensor loss = sum(matmul(x, w.transpose(0, 1)));
  const int64_t before = memory::stats(kCPU).allocated_bytes.current;
  memory::PeakWatch watch(kCPU);
  loss.backward();
  EXPECT_LT(watch.peak() - before, w.nbytes() * 3 / 2);
  EXPECT_TRUE(w.grad().is_contiguous());
  // d/dw sum(x w^T) = column sums of x, one per row of w.
  const std::vector<float> column_sums = sum(x, {0}).to_vector<float>();
  const std::vector<float> grad = w.grad().to_vector<float>();
  for (int64_t row : {0, 511}) {
    for (int64_t j = 0; j < 256; ++j) {
      EXPECT_NEAR(grad[static_cast<size_t>(row * 256 + j)], column_sums[static_cast<size_t>(j)],
                  1e-5);
    }
  }
}

// A gradient that other handles can see is copied: the user's seed, and one
// tensor the backward hands to two leaves.
TEST(Autograd, SharedGradientsAreCopiedIntoTheLeaves) {
  Tensor a = leaf({1, 2}, {2}), b = leaf({3, 4}, {2});
  Tensor seed = from_vector(std::vector<double>{1, 1}, {2});
  (a + b).backward(seed);  // add's backward returns the seed itself for both
  EXPECT_FALSE(a.grad().is_alias_of(seed));
  EXPECT_FALSE(b.grad().is_alias_of(seed));
  EXPECT_FALSE(a.grad().is_alias_of(b.grad()));
  seed.fill_(5);
  a.grad().fill_(7);
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{1, 1}));
}

TEST(Autograd, BroadcastGradientsSumBack) {
  Tensor a = leaf({1, 2, 3}, {3, 1});
  Tensor b = leaf({10, 20}, {2});
  sum(a * b).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{30, 30, 30}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{6, 6}));
}

TEST(Autograd, RetainGraphAllowsASecondBackward) {
  Tensor x = leaf({3}, {1});
  Tensor y = sum(x * x);
  y.backward({}, /*retain_graph=*/true);
  y.backward();
  EXPECT_DOUBLE_EQ(x.grad().item<double>(), 12);
}

TEST(Autograd, BackwardTwiceWithoutRetainGraphThrows) {
  Tensor x = leaf({3}, {1});
  Tensor y = sum(x * x);
  y.backward();
  std::string msg = message_of([&] { y.backward(); });
  EXPECT_NE(msg.find("second time"), std::string::npos) << msg;
  EXPECT_NE(msg.find("retain_graph"), std::string::npos) << msg;
}

TEST(Autograd, NonScalarRootNeedsAGradient) {
  Tensor x = leaf({1, 2}, {2});
  Tensor y = x * 2.0;
  std::string msg = message_of([&] { y.backward(); });
  EXPECT_NE(msg.find("non-scalar"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2]"), std::string::npos) << msg;
  y.backward(from_vector(std::vector<double>{1, 10}, {2}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 20}));
  EXPECT_THROW(y.backward(ones({3}, kFloat64)), Error);
}

TEST(Autograd, SavedTensorModifiedInPlaceIsCaught) {
  Tensor x = leaf({1, 2}, {2});
  Tensor h = x * 2.0;
  Tensor y = sum(exp(h));  // exp saves its output
  Tensor e = exp(h);
  Tensor z = sum(e);
  {
    NoGradGuard g;
    e.detach().mul_(2.0);  // changes what exp saved
  }
  std::string msg = message_of([&] { z.backward(); });
  EXPECT_NE(msg.find("'exp'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("modified in place"), std::string::npos) << msg;
  EXPECT_NE(msg.find("version 0, now at version 1"), std::string::npos) << msg;
  y.backward();  // the untouched branch still works
}

TEST(Autograd, ShapeDtypeDeviceMismatchMessages) {
  Tensor a = leaf({1, 2, 3}, {3});
  Tensor b = ones({2}, kFloat64);
  std::string shape_msg = message_of([&] { (void)(a + b); });
  EXPECT_NE(shape_msg.find("add"), std::string::npos) << shape_msg;
  EXPECT_NE(shape_msg.find("[3]"), std::string::npos) << shape_msg;
  EXPECT_NE(shape_msg.find("[2]"), std::string::npos) << shape_msg;
  std::string dtype_msg = message_of([&] { (void)matmul(ones({2, 2}), ones({2, 2}, kFloat64)); });
  EXPECT_NE(dtype_msg.find("matmul"), std::string::npos) << dtype_msg;
  EXPECT_NE(dtype_msg.find("float32"), std::string::npos) << dtype_msg;
  EXPECT_NE(dtype_msg.find("float64"), std::string::npos) << dtype_msg;
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = leaf({1}, {1});
  Tensor y;
  {
    NoGradGuard g;
    y = x * 2.0;
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_THROW(y.backward(), Error);
  EXPECT_TRUE(GradMode::is_enabled());
}

TEST(Autograd, RequiresGradOnlyOnFloatingLeaves) {
  Tensor x = leaf({1}, {1});
  Tensor y = x * 2.0;
  EXPECT_THROW(y.requires_grad_(), Error);
  Tensor i = from_vector(std::vector<int64_t>{1}, {1});
  EXPECT_THROW(i.requires_grad_(), Error);
}

TEST(Autograd, TapeEntriesDieWithTheirOutputs) {
  Tensor x = leaf({1, 2}, {2});
  int64_t before = autograd::live_entries();
  {
    Tensor y = sum(exp(x * 2.0));
    EXPECT_EQ(autograd::live_entries(), before + 3);
  }
  EXPECT_EQ(autograd::live_entries(), before);
}

TEST(Autograd, SavedTensorsAreFreedDuringBackward) {
  // A chain of 8 exp ops on 1 MiB tensors: every intermediate is saved. After
  // backward without retain_graph the saved tensors are gone, so memory
  // returns to the level of the live tensors alone.
  Tensor x = randn({256, 1024});
  x.requires_grad_();
  const int64_t base = memory::stats(kCPU).allocated_bytes.current;
  Tensor loss;
  {
    Tensor h = x;
    for (int i = 0; i < 8; ++i) h = exp(h * 0.1);
    loss = sum(h);
  }
  const int64_t after_forward = memory::stats(kCPU).allocated_bytes.current;
  EXPECT_GE(after_forward - base, 8 * 1024 * 1024);  // 8 saved exp outputs at least
  loss.backward();
  const int64_t after_backward = memory::stats(kCPU).allocated_bytes.current;
  // Left: the loss and x.grad (1 MiB).
  EXPECT_LE(after_backward - base, 1024 * 1024 + 4096);
}

TEST(Autograd, MultiOutputOpGetsZeroGradForUnusedOutput) {
  Tensor x = leaf({1, 2, 3, 4}, {4});
  std::vector<Tensor> parts = split(x, {1, 3}, 0);
  sum(parts[1] * 2.0).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 2, 2, 2}));
}

TEST(Autograd, OutOfMemoryMidBackwardLeavesTheLibraryWorking) {
  // 10 MiB tensors get segments of their own, so backward's buffers need new ones.
  Tensor x = randn({2048, 1280});
  x.requires_grad_();
  Tensor loss = sum(exp(x * 0.5));
  memory::empty_cache(kCPU);
  const int64_t ooms = memory::stats(kCPU).num_ooms;
  memory::set_memory_limit(kCPU, memory::stats(kCPU).reserved_bytes.current);
  EXPECT_THROW(loss.backward(), OutOfMemoryError);
  memory::set_memory_limit(kCPU, 0);
  EXPECT_EQ(memory::stats(kCPU).num_ooms, ooms + 1);
  x.set_grad({});
  Tensor again = sum(exp(x * 0.5));
  again.backward();
  std::vector<float> g = x.grad().slice(0, 0, 1).slice(1, 0, 2).to_vector<float>();
  std::vector<float> v = x.slice(0, 0, 1).slice(1, 0, 2).to_vector<float>();
  EXPECT_NEAR(g[0], 0.5f * std::exp(0.5f * v[0]), 1e-5f);
}

// ---- gradient-ready hooks -----------------------------------------------------

TEST(GradReadyHooks, FireOnceWhenTheLeafGradientIsFinal) {
  Tensor x = leaf({1, 2}, {2});
  Tensor w = leaf({3, 4}, {2});
  std::vector<std::vector<double>> seen;  // x.grad as each hook call saw it
  int ends = 0;
  GradReadyHandle hx = register_grad_ready_hook(x, [&](const Tensor& t) {
    EXPECT_TRUE(t.is_alias_of(x));
    seen.push_back(t.grad().to_vector<double>());
    queue_backward_callback([&] { ++ends; });
  });
  // x reaches the loss through three entries; the hook waits for all of them.
  Tensor y = sum(x * x + x * w + exp(x * 0.0));
  y.backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], x.grad().to_vector<double>());
  EXPECT_EQ(seen[0], (std::vector<double>{2 * 1 + 3, 2 * 2 + 4}));
  EXPECT_EQ(ends, 1);
  // Another backward, another call; one that does not reach x, none.
  sum(x * 2.0).backward();
  EXPECT_EQ(seen.size(), 2u);
  sum(w * 2.0).backward();
  EXPECT_EQ(seen.size(), 2u);
  hx.reset();
  sum(x * 2.0).backward();
  EXPECT_EQ(seen.size(), 2u);
}

TEST(GradReadyHooks, EarlyLayersFinishLast) {
  // w1 feeds the first op, w2 the last: w2's gradient is final first, while
  // backward still has w1's to compute.
  Tensor w1 = leaf({0.5, -1}, {2});
  Tensor w2 = leaf({2, 3}, {2});
  std::vector<std::string> order;
  GradReadyHandle h1 = register_grad_ready_hook(w1, [&](const Tensor&) { order.push_back("w1"); });
  GradReadyHandle h2 = register_grad_ready_hook(w2, [&](const Tensor&) {
    order.push_back("w2");
    EXPECT_FALSE(w1.grad().defined());
  });
  sum(tanh(tanh(w1 * 2.0) * w2)).backward();
  EXPECT_EQ(order, (std::vector<std::string>{"w2", "w1"}));
}

TEST(GradReadyHooks, CheckpointReplaysDoNotFireThem) {
  Tensor x = leaf({0.1, 0.2, 0.3}, {3});
  Tensor w = leaf({1, 2, 3}, {3});
  int calls = 0;
  GradReadyHandle h = register_grad_ready_hook(w, [&](const Tensor&) { ++calls; });
  Tensor y = checkpoint([&](const Tensor& t) { return tanh(t * w) * w; }, x);
  sum(y * y).backward();
  EXPECT_EQ(calls, 1);
  Tensor plain_w = leaf({1, 2, 3}, {3});
  Tensor plain = tanh(x.detach() * plain_w) * plain_w;
  sum(plain * plain).backward();
  EXPECT_EQ(w.grad().to_vector<double>(), plain_w.grad().to_vector<double>());
}

TEST(GradReadyHooks, ErrorsAndAThrowingHook) {
  Tensor x = leaf({1}, {1});
  EXPECT_NE(message_of([&] { queue_backward_callback([] {}); }).find("outside backward"),
            std::string::npos);
  EXPECT_THROW((void)register_grad_ready_hook(x * 2.0, [](const Tensor&) {}), Error);
  GradReadyHandle h =
      register_grad_ready_hook(x, [](const Tensor&) { throw Error("hook failed"); });
  EXPECT_EQ(message_of([&] { sum(x * 3.0).backward(); }), "hook failed");
  EXPECT_FALSE(x.grad().defined()) << "a failed backward leaves no new gradient";
  h = GradReadyHandle();
  sum(x * 3.0).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3}));
}
