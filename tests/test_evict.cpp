// The eviction mode (BudgetGuard, docs/checkpointing.md "A hard memory
// limit"): under a limit, training never reserves more than the limit and
// computes the gradients it computes without one, bit for bit, on the three
// example model families, a non-sequential graph, checkpoint segments and
// retain_graph; nothing the caller holds is evicted; when nothing evictable
// is left the request fails with a message that says why, and the library
// keeps working.
#include <gtest/gtest.h>

#include <algorithm>

#include "remat/remat.h"
#include "support/error_message.h"
#include "support/stacks.h"

using namespace remat;
using remat::testing::error_message;
using namespace remat::testing;

namespace {

using Grads = std::vector<std::vector<float>>;

// The stacks at batches where activations outweigh the 2 MiB granularity
// of the limits below.
Training mlp() { return Training(mlp_stack()); }
Training transformer() { return Training(transformer_stack(16)); }
Training resnet() { return Training(resnet_stack(32)); }

struct Measured {
  int64_t reserved_peak = 0;
  int64_t reserved_at_start = 0;
  int64_t allocated_peak = 0;
  int64_t allocated_at_start = 0;
  memory::Stats stats;
};

// Runs one step from an empty cache; the allocator's reserved peak.
template <typename Step>
Measured measure(Step&& step) {
  memory::empty_cache(kCPU);
  memory::reset_peak_stats(kCPU);
  Measured m;
  m.reserved_at_start = memory::stats(kCPU).reserved_bytes.current;
  m.allocated_at_start = memory::stats(kCPU).allocated_bytes.current;
  step();
  m.stats = memory::stats(kCPU);
  m.reserved_peak = m.stats.reserved_bytes.peak;
  m.allocated_peak = m.stats.allocated_bytes.peak;
  return m;
}

constexpr int64_t kMiB = int64_t{1} << 20;

// A limit of what a step starts with plus a fraction of what it allocates
// on top, rounded down to whole 2 MiB segments (the small pool's).
int64_t limit_between(const Measured& m, double fraction) {
  // Reserved bytes over-count a free run's need where its large requests
  // shared 20 MiB segments; allocated bytes do where the start is fragmented.
  const auto span = static_cast<double>(
      std::min(m.allocated_peak - m.allocated_at_start, m.reserved_peak - m.reserved_at_start));
  const int64_t limit = m.reserved_at_start + static_cast<int64_t>(fraction * span);
  return std::max(m.reserved_at_start, limit / (2 * kMiB) * (2 * kMiB));
}

}  // namespace

TEST(BudgetGuard, EveryStepStaysUnderTheLimitWithTheGradientsOfNoLimit) {
  for (auto make : {mlp, transformer, resnet}) {
    Training t = make();
    t.step();  // gradients and optimizer state exist from here on
    const Measured free_run = measure([&] { t.step(); });
    const Grads want = gradients(t.s);
    std::printf(
        "%-12s no limit: reserved %.1f MiB at start, peak %.1f MiB; allocated %.1f MiB at start, "
        "peak %.1f MiB\n",
        t.s.name.c_str(), static_cast<double>(free_run.reserved_at_start) / kMiB,
        static_cast<double>(free_run.reserved_peak) / kMiB,
        static_cast<double>(free_run.allocated_at_start) / kMiB,
        static_cast<double>(free_run.allocated_peak) / kMiB);
    for (double fraction : {0.75, 0.5, 0.25}) {
      const int64_t limit = limit_between(free_run, fraction);
      ASSERT_LT(limit, free_run.reserved_peak) << t.s.name;
      memory::Stats before = memory::stats(kCPU);
      for (int step = 0; step < 2; ++step) {
        const Measured m = measure([&] {
          BudgetGuard guard(kCPU, limit);
          t.step();
        });
        std::printf(
            "%-12s limit %.1f MiB step %d: reserved peak %.1f MiB, %lld evictions (%.1f MiB), "
            "%lld regenerations (%.1f MiB)\n",
            t.s.name.c_str(), static_cast<double>(limit) / kMiB, step,
            static_cast<double>(m.reserved_peak) / kMiB,
            static_cast<long long>(m.stats.num_evictions - before.num_evictions),
            static_cast<double>(m.stats.evicted_bytes - before.evicted_bytes) / kMiB,
            static_cast<long long>(m.stats.num_regenerations - before.num_regenerations),
            static_cast<double>(m.stats.regenerated_bytes - before.regenerated_bytes) / kMiB);
        EXPECT_LE(m.reserved_peak, limit) << t.s.name;
        EXPECT_GT(m.stats.num_evictions, before.num_evictions) << t.s.name;
        // Freeing what backward never reads may suffice at looser limits;
        // at a quarter of the activations saved tensors must go and come back.
        if (fraction == 0.25) {
          EXPECT_GT(m.stats.num_regenerations, before.num_regenerations) << t.s.name;
        }
        before = m.stats;
        EXPECT_EQ(gradients(t.s), want) << t.s.name << " limit " << limit;
        EXPECT_EQ(m.stats.memory_limit, 0) << "the guard restores the limit";
      }
    }
  }
}

// Checkpoint plans (every other block, every block, nested, keeping matmuls)
// under limits below each plan's own peak: the block outputs segments leave
// and the values a policy keeps are evicted and made again along the tape;
// the segments' replays run as usual (what a replay makes is not evictable).
TEST(BudgetGuard, ComposesWithCheckpointSegments) {
  // A larger batch: the block plan's activations span several 2 MiB segments.
  Training t(transformer_stack(64));
  t.step();
  t.step();
  const Grads want = gradients(t.s);
  // Limits from 60% of the plan's activations down: each step either meets
  // its limit with the plan's gradients or fails for want of anything to
  // evict. Where blocks stay plain or keep matmuls, some limit must need
  // regeneration; under block and nested plans what backward needs beyond the
  // replay's own working set (not evictable) is too little for any limit to.
  struct Case {
    const char* plan;
    bool regenerates;
  };
  for (const Case& c : {Case{"alternate", true}, Case{"block", false}, Case{"nested", false},
                        Case{"selective", true}}) {
    const char* plan = c.plan;  // a plain variable: lambdas below capture it
    const Measured planned = measure([&] { t.step(CheckpointPlan::parse(plan)); });
    int64_t regenerated = 0;
    for (double fraction : {0.6, 0.45, 0.3, 0.15}) {
      const int64_t limit = limit_between(planned, fraction);
      Measured m;
      const std::string failure = error_message([&] {
        m = measure([&] {
          BudgetGuard guard(kCPU, limit);
          t.step(CheckpointPlan::parse(plan));
        });
      });
      if (failure != "(no error)") {
        EXPECT_NE(failure.find("nothing is left to evict"), std::string::npos) << failure;
        continue;
      }
      EXPECT_LE(m.reserved_peak, limit) << plan;
      EXPECT_EQ(gradients(t.s), want) << plan << " limit " << limit;
      const int64_t bytes = m.stats.regenerated_bytes - planned.stats.regenerated_bytes;
      regenerated += bytes;
      std::printf("%-10s limit %.1f MiB (plan peak %.1f MiB): %.1f MiB regenerated\n", plan,
                  static_cast<double>(limit) / kMiB,
                  static_cast<double>(planned.reserved_peak) / kMiB,
                  static_cast<double>(bytes) / kMiB);
    }
    if (c.regenerates) {
      EXPECT_GT(regenerated, 0) << plan;
    }
  }
}

namespace {

// Not a chain: two branches of one input joined, and the first layer's
// output read again at the end, far from where it was made.
Tensor branchy(const std::vector<Tensor>& w, const Tensor& x) {
  Tensor first = relu(matmul(x, w[0]));
  Tensor h = first;
  for (size_t i = 1; i + 2 < w.size(); ++i) h = gelu(matmul(h, w[i]));
  Tensor left = tanh(matmul(h, w[w.size() - 2]));
  Tensor right = sigmoid(matmul(h, w[w.size() - 1]));
  return sum((left * right + first) * (left - right));
}

}  // namespace

TEST(BudgetGuard, NonSequentialGraphsAndRetainGraph) {
  manual_seed(5);
  std::vector<Tensor> w;
  for (int i = 0; i < 12; ++i) w.push_back((randn({256, 256}) * 0.06).requires_grad_());
  const Tensor x = randn({512, 256});
  auto run = [&] {
    for (Tensor& p : w) p.set_grad({});
    Tensor loss = branchy(w, x);
    backward(loss, {}, /*retain_graph=*/true);
    backward(loss);  // the second pass regenerates again what the first freed
  };
  const Measured free_run = measure(run);
  const Grads want = gradients(w);
  const int64_t limit = limit_between(free_run, 0.6);
  const Measured m = measure([&] {
    BudgetGuard guard(kCPU, limit);
    run();
  });
  EXPECT_LE(m.reserved_peak, limit);
  EXPECT_GT(m.stats.num_regenerations, free_run.stats.num_regenerations);
  EXPECT_EQ(gradients(w), want);
}

// A tensor evicted in the forward is regenerated in a backward that runs
// after the guard ended; what the caller holds is never evicted.
TEST(BudgetGuard, HeldTensorsStayAndEvictedOnesOutliveTheGuard) {
  manual_seed(6);
  std::vector<Tensor> w;
  for (int i = 0; i < 12; ++i) w.push_back((randn({256, 256}) * 0.06).requires_grad_());
  const Tensor x = randn({512, 256});
  Tensor loss;
  Tensor held;
  auto forward = [&] {
    Tensor h = x;
    for (size_t i = 0; i < w.size(); ++i) {
      h = gelu(matmul(h, w[i]));
      if (i == 2) held = h;
    }
    loss = sum(h);
  };
  forward();
  const std::vector<float> held_want = held.to_vector<float>();
  backward(loss);
  const Grads want = gradients(w);
  for (Tensor& p : w) p.set_grad({});
  held = {};
  loss = {};

  memory::empty_cache(kCPU);
  const int64_t before = memory::stats(kCPU).num_evictions;
  {
    BudgetGuard guard(kCPU, memory::stats(kCPU).reserved_bytes.current + 6 * kMiB);
    forward();
  }
  EXPECT_GT(memory::stats(kCPU).num_evictions, before) << "the forward alone passes the limit";
  EXPECT_EQ(held.to_vector<float>(), held_want);
  backward(loss);
  EXPECT_EQ(gradients(w), want);
}

TEST(BudgetGuard, TimelineTagsEvictionsAndRegenerations) {
  Training t = mlp();
  t.step();
  const Measured free_run = measure([&] { t.step(); });
  memory::enable_timeline(kCPU, true);
  {
    BudgetGuard guard(kCPU, limit_between(free_run, 0.5));
    t.step();
  }
  const std::vector<memory::Event> events = memory::timeline(kCPU);
  memory::enable_timeline(kCPU, false);
  auto tagged = [&](const char* tag, memory::EventKind kind) {
    return std::count_if(events.begin(), events.end(),
                         [&](const memory::Event& e) { return e.tag == tag && e.kind == kind; });
  };
  EXPECT_GT(tagged("evict", memory::EventKind::Free), 0);
  EXPECT_GT(tagged("regenerate", memory::EventKind::Alloc), 0);
}

// Below what the step cannot do without (parameters, gradients, optimizer
// state and one layer's working set), the request fails naming why; the
// library keeps working, and the same step without a guard gives the same
// gradients as before.
TEST(BudgetGuard, NothingLeftToEvictThrowsAndLeavesTheLibraryWorking) {
  Training t = mlp();
  t.step();
  t.step();
  const Grads want = gradients(t.s);
  memory::empty_cache(kCPU);
  const int64_t start = memory::stats(kCPU).reserved_bytes.current;
  const std::string msg = error_message([&] {
    BudgetGuard guard(kCPU, start);
    t.step();
  });
  EXPECT_NE(msg.find("out of memory"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nothing is left to evict"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a limit of at least"), std::string::npos) << msg;
  EXPECT_EQ(memory::stats(kCPU).memory_limit, 0);
  t.step();
  EXPECT_EQ(gradients(t.s), want);
}

TEST(BudgetGuard, RefusesALimitBelowWhatIsInUse) {
  const Tensor big = zeros({1 << 20});  // 4 MiB
  const std::string msg = error_message([] { BudgetGuard guard(kCPU, 1 * kMiB); });
  EXPECT_NE(msg.find("below the"), std::string::npos) << msg;
  EXPECT_EQ(memory::stats(kCPU).memory_limit, 0);
}

// BatchNorm's running statistics move once per step under a limit too: a
// regenerated batch_norm runs as a replay does, leaving them alone.
TEST(BudgetGuard, RegenerationLeavesRunningStatisticsAlone) {
  auto buffers = [](const Training& t) {
    std::vector<std::vector<float>> out;
    for (const auto& [name, b] : t.s.blocks->named_buffers()) {
      if (is_floating(b.dtype())) out.push_back(b.to_vector<float>());
    }
    return out;
  };
  Training plain = resnet();
  plain.step();
  const Measured free_run = measure([&] { plain.step(); });
  Training guarded = resnet();
  guarded.step();
  const Measured m = measure([&] {
    BudgetGuard guard(kCPU, limit_between(free_run, 0.35));
    guarded.step();
  });
  EXPECT_GT(m.stats.num_regenerations, free_run.stats.num_regenerations);
  EXPECT_FALSE(buffers(plain).empty());
  EXPECT_EQ(buffers(guarded), buffers(plain));
}
