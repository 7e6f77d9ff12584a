// The fault sweep (issue 12): one training step of the examples' transformer
// and ResNet, plain and under every checkpoint plan, run once per allocation
// of the step with that allocation failing (memory::FailAllocationScope).
// Each time the step must throw OutOfMemoryError and leave no trace: the
// allocated bytes of before the step, no live tape entry, parameters and
// optimizer state untouched, gradients as the failure point leaves them
// (docs/memory.md), each BatchNorm's statistics moved fully or not at all.
// Then the step, retried as a user would (reseeded, the statistics restored),
// must give bitwise the results of a run that never failed. Also here: the
// facility itself, and every optimizer's step failing at each allocation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "models.h"
#include "remat/optim/optim.h"

using namespace remat;

namespace {

constexpr uint64_t kStepSeed = 77;  // the generator's seed at the start of every attempt

// n labels below `classes`, spread over them.
Tensor labels(int64_t n, int64_t classes, int64_t stride) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back((i * stride + 1) % classes);
  return from_vector(v, {n});
}

// One model with its batch, loss and optimizer, as a training loop has them.
struct Workload {
  std::string name;
  std::shared_ptr<nn::Module> model;
  std::function<Tensor(const CheckpointPlan&)> loss;  // forward and loss
  std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor>)> make_optimizer;
  bool clip = false;
};

Workload transformer() {
  manual_seed(3);
  auto model = std::make_shared<examples::CharTransformer>(/*vocab=*/11, /*context=*/8,
                                                           /*d_model=*/8, /*heads=*/2,
                                                           /*layers=*/3, /*dropout=*/0.1);
  const Tensor tokens = reshape(labels(16, 11, 3), {2, 8});
  const Tensor targets = reshape(labels(16, 11, 5), {2, 8});
  return {"transformer", model,
          [model, tokens, targets](const CheckpointPlan& plan) {
            const Tensor logits = model->run(tokens, plan);
            return cross_entropy(reshape(logits, {-1, logits.size(-1)}), reshape(targets, {-1}));
          },
          [](std::vector<Tensor> params) {
            return std::make_unique<optim::AdamW>(std::move(params),
                                                  optim::AdamOptions{.lr = 1e-2});
          },
          /*clip=*/true};
}

Workload resnet() {
  manual_seed(4);
  auto model = std::make_shared<examples::SmallResNet>(/*in_channels=*/1, /*width=*/4,
                                                       /*stages=*/2, /*blocks_per_stage=*/1,
                                                       /*classes=*/5);
  const Tensor images = rand({2, 1, 8, 8});
  const Tensor targets = labels(2, 5, 2);
  return {
      "resnet", model,
      [model, images, targets](const CheckpointPlan& plan) {
        return cross_entropy(model->run(images, plan), targets);
      },
      [](std::vector<Tensor> params) {
        return std::make_unique<optim::SGD>(
            std::move(params),
            optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true});
      },
      /*clip=*/false};
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  return std::vector<uint8_t>(p, p + c.nbytes());
}

std::vector<Tensor> clones(const std::vector<Tensor>& ts) {
  NoGradGuard no_grad;
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.detach().clone());
  return out;
}

void copy_into(const std::vector<Tensor>& to, const std::vector<Tensor>& from) {
  NoGradGuard no_grad;
  for (size_t i = 0; i < to.size(); ++i) Tensor(to[i]).copy_(from[i]);
}

// The model's and the optimizer's state, as bytes, for bitwise comparison.
struct State {
  std::vector<std::vector<uint8_t>> params, grads, buffers, optimizer;
  std::vector<int64_t> steps;
  bool operator==(const State&) const = default;
};

// Empty for an undefined tensor.
std::vector<std::vector<uint8_t>> bytes_of(const std::vector<Tensor>& ts) {
  std::vector<std::vector<uint8_t>> out;
  for (const Tensor& t : ts) out.push_back(t.defined() ? bytes_of(t) : std::vector<uint8_t>{});
  return out;
}

std::vector<Tensor> grads_of(const nn::Module& model) {
  std::vector<Tensor> out;
  for (const Tensor& p : model.parameters()) out.push_back(p.grad());
  return out;
}

std::vector<Tensor> buffers_of(const nn::Module& model) {
  std::vector<Tensor> out;
  for (const auto& [name, b] : model.named_buffers()) out.push_back(b);
  return out;
}

void add_optimizer_state(const optim::Optimizer& opt, State& s) {
  for (size_t i = 0; i < opt.parameters().size(); ++i) {
    const optim::ParamState& ps = opt.state(i);
    s.steps.push_back(ps.step);
    for (auto& b : bytes_of({ps.momentum_buffer, ps.exp_avg, ps.exp_avg_sq})) {
      s.optimizer.push_back(std::move(b));
    }
  }
}

State state_of(const nn::Module& model, const optim::Optimizer& opt) {
  State s;
  s.params = bytes_of(model.parameters());
  s.grads = bytes_of(grads_of(model));
  s.buffers = bytes_of(buffers_of(model));
  add_optimizer_state(opt, s);
  return s;
}

// ---- the facility ------------------------------------------------------------

TEST(FailAllocationScope, FailsTheKthRequestOnlyAndCountsRequestsTheCacheServes) {
  { Tensor warm = Tensor::empty({64}); }  // its block is cached now
  const memory::Stats before = memory::stats(kCPU);
  {
    memory::FailAllocationScope fail(kCPU, 3);
    const Tensor a = Tensor::empty({64});    // 1: from the cache
    const Tensor none = Tensor::empty({0});  // no bytes: not a request
    const Tensor b = Tensor::empty({64});    // 2
    try {
      Tensor::empty({64});
      ADD_FAILURE() << "request 3 did not fail";
    } catch (const OutOfMemoryError& e) {
      EXPECT_NE(std::string(e.what()).find("injected failure"), std::string::npos) << e.what();
    }
    const Tensor c = Tensor::empty({64});  // 4: only one request fails
  }
  const memory::Stats after = memory::stats(kCPU);
  EXPECT_EQ(after.num_ooms, before.num_ooms + 1);
  EXPECT_EQ(after.num_alloc_retries, before.num_alloc_retries + 1);
  EXPECT_EQ(after.allocation_count.allocated, before.allocation_count.allocated + 3);
  EXPECT_EQ(after.allocated_bytes.current, before.allocated_bytes.current);
}

TEST(FailAllocationScope, TakesThePathOfARequestOverTheLimit) {
  { Tensor big = Tensor::empty({4 << 20}); }  // 16 MiB: a segment of its own, now cached
  const memory::Stats before = memory::stats(kCPU);
  {
    memory::FailAllocationScope fail(kCPU, 1);
    EXPECT_THROW(Tensor::empty({1}), OutOfMemoryError);
  }
  // As over the limit, the wholly free segments went back before the refusal.
  const memory::Stats after = memory::stats(kCPU);
  EXPECT_GT(after.num_raw_frees, before.num_raw_frees);
  EXPECT_LE(after.reserved_bytes.current, before.reserved_bytes.current - (16 << 20));
  EXPECT_NO_THROW(Tensor::empty({4 << 20}));
}

TEST(FailAllocationScope, AFailureThatHasNotComeIsDisarmedWithTheScope) {
  const int64_t ooms = memory::stats(kCPU).num_ooms;
  {
    memory::FailAllocationScope fail(kCPU, 2);
    Tensor::empty({8});
  }
  for (int i = 0; i < 4; ++i) EXPECT_NO_THROW(Tensor::empty({8}));
  EXPECT_EQ(memory::stats(kCPU).num_ooms, ooms);
  EXPECT_THROW(memory::FailAllocationScope(kCPU, 0), Error);
}

// ---- optimizers: a step is all or nothing -------------------------------------------

using MakeOptimizer = std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor>)>;

// Parameters of each floating dtype with constant gradients, the optimizer,
// and `steps` steps taken.
struct Trained {
  std::vector<Tensor> params;
  std::unique_ptr<optim::Optimizer> optimizer;

  Trained(const MakeOptimizer& make, int steps) {
    int64_t n = 2;
    for (DType dtype : {kFloat32, kBFloat16, kFloat64, kFloat16}) {
      Tensor p = full({n}, 0.5 * static_cast<double>(n), dtype);
      p.requires_grad_();
      p.set_grad(full({n}, -0.25 * static_cast<double>(n), dtype));
      params.push_back(p);
      ++n;
    }
    optimizer = make(params);
    for (int s = 0; s < steps; ++s) optimizer->step();
  }
  State state() const {
    State s;
    s.params = bytes_of(params);
    add_optimizer_state(*optimizer, s);
    return s;
  }
};

TEST(OptimizerStep, IsAllOrNothingAtEveryAllocation) {
  const std::vector<std::pair<const char*, MakeOptimizer>> cases{
      {"SGD", [](auto p) { return std::make_unique<optim::SGD>(p, optim::SGDOptions{.lr = 0.1}); }},
      {"SGD momentum, dampening, weight decay",
       [](auto p) {
         return std::make_unique<optim::SGD>(
             p,
             optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.2, .weight_decay = 0.1});
       }},
      {"SGD nesterov",
       [](auto p) {
         return std::make_unique<optim::SGD>(
             p, optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true});
       }},
      {"Adam", [](auto p) { return std::make_unique<optim::Adam>(p); }},
      {"AdamW", [](auto p) { return std::make_unique<optim::AdamW>(p); }},
  };
  for (const auto& [name, make] : cases) {
    for (int warmup : {0, 1}) {
      SCOPED_TRACE(fmt::format("{}, step {}", name, warmup + 1));
      Trained reference(make, warmup);
      const int64_t count = memory::stats(kCPU).allocation_count.allocated;
      reference.optimizer->step();
      const int64_t allocations = memory::stats(kCPU).allocation_count.allocated - count;
      for (int64_t k = 1; k <= allocations; ++k) {
        Trained t(make, warmup);
        const State before = t.state();
        const int64_t allocated = memory::stats(kCPU).allocated_bytes.current;
        {
          memory::FailAllocationScope fail(kCPU, k);
          EXPECT_THROW(t.optimizer->step(), OutOfMemoryError) << "allocation " << k;
        }
        EXPECT_EQ(memory::stats(kCPU).allocated_bytes.current, allocated) << "allocation " << k;
        EXPECT_TRUE(t.state() == before) << "allocation " << k << " of " << allocations;
        t.optimizer->step();
        EXPECT_TRUE(t.state() == reference.state()) << "the retry after allocation " << k;
      }
    }
  }
}

// A model's buffers grouped by the module that owns them (BatchNorm2d's
// running statistics and count), as indices into named_buffers().
std::vector<std::vector<size_t>> buffers_by_module(const nn::Module& model) {
  std::map<std::string, std::vector<size_t>> groups;
  size_t i = 0;
  for (const auto& [name, b] : model.named_buffers()) {
    groups[name.substr(0, name.rfind('.'))].push_back(i++);
  }
  std::vector<std::vector<size_t>> out;
  for (auto& [module, indices] : groups) out.push_back(std::move(indices));
  return out;
}

// One model and plan; the step swept is the first (no gradients, no
// optimizer state: everything is allocated lazily) or, after warm-up steps,
// one in the steady state (gradients zeroed and accumulated in place, the
// optimizer's state updated).
class Sweep {
 public:
  Sweep(Workload w, const std::string& plan, int warmup_steps)
      : w_(std::move(w)),
        plan_(CheckpointPlan::parse(plan)),
        warmup_steps_(warmup_steps),
        params_(w_.model->parameters()),
        buffers_(buffers_of(*w_.model)),
        initial_params_(clones(params_)),
        initial_buffers_(clones(buffers_)) {}

  // zero_grad in place (a no-op when there are none; later steps then sweep
  // the backward that adds to existing gradients, the first step the one
  // that creates them, as after the default zero_grad), forward, loss,
  // backward, clipping (where the workload clips), optimizer step.
  // `after_backward` sees the gradients before clipping.
  Tensor step(optim::Optimizer& optimizer, const std::function<void()>& after_backward = {}) {
    optimizer.zero_grad(/*set_to_none=*/false);
    manual_seed(kStepSeed);
    Tensor loss;
    {
      memory::TagScope tag("forward");
      loss = w_.loss(plan_);
    }
    loss.backward();
    if (after_backward) after_backward();
    if (w_.clip) {
      memory::TagScope tag("clip");
      optim::clip_grad_norm(params_, 0.5);
    }
    optimizer.step();
    return loss;
  }

  // The step that never fails: its allocations' tags in order, the
  // gradients its backward gives, and what it leaves.
  void run_reference() {
    auto optimizer = restore();
    memory::enable_timeline(kCPU, true);
    const int64_t before = memory::stats(kCPU).allocation_count.allocated;
    const Tensor loss = step(*optimizer);
    allocations_ = memory::stats(kCPU).allocation_count.allocated - before;
    memory::enable_timeline(kCPU, false);
    for (const memory::Event& e : memory::timeline(kCPU)) {
      if (e.kind == memory::EventKind::Alloc) tags_.push_back(e.tag);
    }
    ASSERT_EQ(static_cast<int64_t>(tags_.size()), allocations_);
    reference_loss_ = bytes_of(loss);
    reference_ = state_of(*w_.model, *optimizer);

    optimizer = restore();
    step(*optimizer, [this] { backward_grads_ = bytes_of(grads_of(*w_.model)); });
  }

  // Allocation k of the step fails; checks what is left, then retries.
  void fail_at(int64_t k) {
    const std::string& tag = this->tag(k);
    SCOPED_TRACE(fmt::format("{}: allocation {} of {} ({})", name(), k, allocations_, tag));
    auto optimizer = restore();
    const State before = state_of(*w_.model, *optimizer);
    const memory::Stats stats = memory::stats(kCPU);
    ASSERT_EQ(autograd::live_entries(), 0);
    bool threw = false;
    try {
      memory::FailAllocationScope fail(kCPU, k);
      step(*optimizer);
    } catch (const OutOfMemoryError& e) {
      threw = true;
      EXPECT_NE(std::string(e.what()).find("injected"), std::string::npos) << e.what();
    }
    ASSERT_TRUE(threw) << "the step finished although an allocation failed";
    EXPECT_EQ(memory::stats(kCPU).num_ooms, stats.num_ooms + 1);
    EXPECT_EQ(autograd::live_entries(), 0);
    const State failed = state_of(*w_.model, *optimizer);
    EXPECT_TRUE(failed.params == before.params) << "a parameter changed";
    EXPECT_TRUE(failed.optimizer == before.optimizer && failed.steps == before.steps)
        << "the optimizer state changed";
    check_grads(tag, failed.grads, before.grads);
    // A forward that ran a BatchNorm moved its statistics (a side effect
    // outside the tape); each module's must have moved fully or not at all.
    for (const std::vector<size_t>& module : buffers_by_module(*w_.model)) {
      bool untouched = true, moved = true;
      for (size_t i : module) {
        untouched = untouched && failed.buffers[i] == before.buffers[i];
        moved = moved && failed.buffers[i] == reference_.buffers[i];
      }
      EXPECT_TRUE(untouched || moved) << "buffer " << module.front() << " is half updated";
    }
    // The first step's gradients are new: once they are dropped (a finished
    // backward leaves them), everything the step allocated is back.
    if (warmup_steps_ == 0) drop_grads();
    EXPECT_EQ(memory::stats(kCPU).allocated_bytes.current, stats.allocated_bytes.current);

    // The retry: the statistics restored, the generator reseeded (in step()).
    copy_into(buffers_, state_buffers_);
    const Tensor loss = step(*optimizer);
    const State retried = state_of(*w_.model, *optimizer);
    EXPECT_TRUE(bytes_of(loss) == reference_loss_) << "the loss differs";
    EXPECT_TRUE(retried.params == reference_.params) << "a parameter differs";
    EXPECT_TRUE(retried.grads == reference_.grads) << "a gradient differs";
    EXPECT_TRUE(retried.buffers == reference_.buffers) << "a buffer differs";
    EXPECT_TRUE(retried.optimizer == reference_.optimizer && retried.steps == reference_.steps)
        << "the optimizer state differs";
  }

  std::string name() const {
    return fmt::format("{}, plan {}, step {}", w_.name, plan_.name(), warmup_steps_ + 1);
  }
  int64_t allocations() const { return allocations_; }
  // The failure points to run: every stride-th allocation, and the first and
  // last of every stretch of one tag (where forward, backward, a replay, the
  // optimizer begin and end).
  std::vector<int64_t> points(int64_t stride) const {
    std::vector<int64_t> out;
    for (int64_t k = 1; k <= allocations_; ++k) {
      const bool first = k == 1 || tag(k - 1) != tag(k);
      const bool last = k == allocations_ || tag(k + 1) != tag(k);
      if (k % stride == 0 || first || last) out.push_back(k);
    }
    return out;
  }
  const std::string& tag(int64_t k) const { return tags_[static_cast<size_t>(k - 1)]; }

 private:
  void drop_grads() {
    for (const Tensor& p : params_) p.set_grad(Tensor());
  }

  // The state before the swept step: the model as built, no gradients, a new
  // optimizer, then the warm-up steps. Returns the optimizer.
  std::unique_ptr<optim::Optimizer> restore() {
    copy_into(params_, initial_params_);
    copy_into(buffers_, initial_buffers_);
    drop_grads();
    auto optimizer = w_.make_optimizer(params_);
    for (int s = 0; s < warmup_steps_; ++s) step(*optimizer);
    state_buffers_ = clones(buffers_);
    return optimizer;
  }

  // What the step leaves in the gradients when allocation `tag` fails. Before
  // the backward writes them they are as zero_grad left them (none on the
  // first step); a failed backward removes those it created, and leaves those
  // that existed partly accumulated (not checked); clipping and the optimizer
  // find those of the backward that finished, clipped fully or not at all.
  void check_grads(const std::string& tag, const std::vector<std::vector<uint8_t>>& grads,
                   const std::vector<std::vector<uint8_t>>& before) const {
    const bool in_backward = tag == "backward" || tag.starts_with("replay:");
    if (tag == "clip") {
      EXPECT_TRUE(grads == backward_grads_) << "clipping failed halfway";
    } else if (tag == "optimizer") {
      EXPECT_TRUE(grads == reference_.grads) << "the optimizer changed a gradient";
    } else if (warmup_steps_ == 0) {
      EXPECT_TRUE(grads == before) << "a gradient was left behind";
    } else if (!in_backward) {
      for (size_t i = 0; i < grads.size(); ++i) {
        EXPECT_TRUE(std::all_of(grads[i].begin(), grads[i].end(), [](uint8_t b) { return b == 0; }))
            << "gradient " << i << " is not zeroed";
      }
    }
  }

  Workload w_;
  CheckpointPlan plan_;
  int warmup_steps_;
  std::vector<Tensor> params_, buffers_, initial_params_, initial_buffers_, state_buffers_;
  int64_t allocations_ = 0;
  std::vector<std::string> tags_;
  std::vector<uint8_t> reference_loss_;
  State reference_;
  std::vector<std::vector<uint8_t>> backward_grads_;
};

const char* const kPlans[] = {"none", "block",     "every-2", "alternate",
                              "sqrt", "selective", "nested"};

// Every allocation of the step fails once, in an optimized build. Without
// NDEBUG (the debug and asan presets: unoptimized, 60 to 80 times slower) the
// sweep takes every 10th and the first and last of each tag's stretch;
// REMAT_FAULT_SWEEP_STRIDE=n sets the stride (1: all).
int64_t stride() {
  if (const char* env = std::getenv("REMAT_FAULT_SWEEP_STRIDE")) return std::max(1, std::atoi(env));
#if defined(NDEBUG)
  return 1;
#else
  return 10;
#endif
}

void sweep(Workload (*make)(), const char* plan, int warmup_steps) {
  Sweep s(make(), plan, warmup_steps);
  s.run_reference();
  if (::testing::Test::HasFatalFailure()) return;
  std::map<std::string, int64_t> by_tag;
  const std::vector<int64_t> points = s.points(stride());
  for (int64_t k : points) {
    s.fail_at(k);
    if (::testing::Test::HasFailure()) return;  // the first failure point says it all
    ++by_tag[s.tag(k)];
  }
  std::string tags;
  for (const auto& [tag, count] : by_tag) {
    tags += fmt::format(" {}={}", tag.empty() ? "untagged" : tag, count);
  }
  std::printf("[ sweep    ] %s: %zu of %lld failure points:%s\n", s.name().c_str(), points.size(),
              static_cast<long long>(s.allocations()), tags.c_str());
}

class FaultSweep : public ::testing::TestWithParam<const char*> {};

TEST_P(FaultSweep, TransformerFirstStep) { sweep(&transformer, GetParam(), 0); }
TEST_P(FaultSweep, ResNetFirstStep) { sweep(&resnet, GetParam(), 0); }

INSTANTIATE_TEST_SUITE_P(Plans, FaultSweep, ::testing::ValuesIn(kPlans),
                         [](const auto& param_info) {
                           std::string name = param_info.param;
                           std::erase(name, '-');
                           return name;
                         });

// The steady state differs from the first step outside checkpointing (which
// the first step covers plan by plan): gradients accumulated in place, the
// optimizer's state updated rather than created.
TEST(FaultSweepSteadyState, TransformerSecondStep) { sweep(&transformer, "none", 1); }
TEST(FaultSweepSteadyState, ResNetSecondStep) { sweep(&resnet, "none", 1); }
TEST(FaultSweepSteadyState, TransformerNestedSecondStep) { sweep(&transformer, "nested", 1); }

}  // namespace
