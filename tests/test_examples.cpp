// The example models train: a few steps on a few fixed batches make the loss
// go down, and a checkpointed run gives bitwise the same losses and gradients
// as the plain one.
#include <gtest/gtest.h>

#include "models.h"
#include "remat/optim/optim.h"

using namespace remat;

namespace {

struct Trace {
  std::vector<float> losses;
  std::vector<std::vector<float>> grads;  // after the last step's backward
};

// Steps of AdamW on the same batch (memorising it must lower the loss).
template <typename Model>
Trace train(Model& model, const Tensor& inputs, const Tensor& targets, const CheckpointPlan& plan,
            int steps) {
  optim::AdamW optimizer(model.parameters(), {.lr = 3e-3});
  Trace trace;
  for (int s = 0; s < steps; ++s) {
    optimizer.zero_grad();
    Tensor logits = model.run(inputs, plan);
    Tensor loss = cross_entropy(reshape(logits, {-1, logits.size(-1)}), reshape(targets, {-1}));
    loss.backward();
    trace.losses.push_back(loss.item<float>());
    if (s + 1 < steps) optimizer.step();
  }
  for (const Tensor& p : model.parameters()) trace.grads.push_back(p.grad().to_vector<float>());
  return trace;
}

// Builds a fresh model from the same seed for each plan and checks that every
// plan trains identically to the plain run, and that the loss went down.
template <typename MakeModel>
void check_plans(const MakeModel& make, const Tensor& inputs, const Tensor& targets, int steps,
                 std::initializer_list<const char*> plans) {
  manual_seed(5);
  auto plain_model = make();
  manual_seed(100);  // dropout draws
  const Trace plain = train(*plain_model, inputs, targets, CheckpointPlan::parse("none"), steps);
  EXPECT_LT(plain.losses.back(), 0.8 * plain.losses.front());
  for (const char* name : plans) {
    manual_seed(5);
    auto model = make();
    manual_seed(100);
    const Trace t = train(*model, inputs, targets, CheckpointPlan::parse(name), steps);
    EXPECT_EQ(t.losses, plain.losses) << name;
    EXPECT_EQ(t.grads, plain.grads) << name;
  }
}

Tensor random_labels(int64_t n, int64_t classes) {
  return reshape(argmax(rand({n, classes}), 1), {n});
}

}  // namespace

TEST(ExampleModels, MlpTrainsAndCheckpointingChangesNothing) {
  manual_seed(1);
  const Tensor images = rand({32, 1, 28, 28});
  const Tensor labels = random_labels(32, 10);
  check_plans(
      [] {
        return std::make_shared<examples::MlpClassifier>(784, std::vector<int64_t>{64, 32}, 10,
                                                         0.1);
      },
      images, labels, 15, {"block", "sqrt"});
}

TEST(ExampleModels, ResNetTrainsAndCheckpointingChangesNothing) {
  manual_seed(2);
  const Tensor images = rand({8, 1, 28, 28});
  const Tensor labels = random_labels(8, 10);
  check_plans([] { return std::make_shared<examples::SmallResNet>(1, 4, 2, 1, 10); }, images,
              labels, 20, {"block", "nested"});
}

TEST(ExampleModels, TransformerTrainsAndCheckpointingChangesNothing) {
  manual_seed(3);
  const int64_t vocab = 12, context = 16;
  const Tensor tokens = reshape(argmax(rand({4 * context, vocab}), 1), {4, context});
  // Next-token targets: the input shifted by one (wrapping), a learnable map.
  const Tensor targets = concat({slice(tokens, 1, 1, context), slice(tokens, 1, 0, 1)}, 1);
  check_plans(
      [&] { return std::make_shared<examples::CharTransformer>(vocab, context, 32, 4, 3, 0.1); },
      tokens, targets, 8, {"block", "selective", "every-2"});
}

namespace {

// Trains a fresh model from `make` without a limit, then another under a
// BudgetGuard of what the first run kept between steps (parameters,
// gradients, optimizer state) plus half of what it allocated on top: the
// same losses and gradients step for step, reserved memory within the limit,
// and saved tensors evicted and regenerated on the way.
template <typename MakeModel>
void check_under_memory_limit(const MakeModel& make, const Tensor& inputs, const Tensor& targets,
                              int steps) {
  const CheckpointPlan none = CheckpointPlan::parse("none");
  auto plain_model = make();
  memory::empty_cache(kCPU);
  const int64_t start = memory::stats(kCPU).allocated_bytes.current;
  memory::reset_peak_stats(kCPU);
  manual_seed(100);
  const Trace plain = train(*plain_model, inputs, targets, none, steps);
  const int64_t kept = memory::stats(kCPU).allocated_bytes.current - start;
  const int64_t activations = memory::stats(kCPU).allocated_bytes.peak - start - kept;
  plain_model.reset();

  auto model = make();
  memory::empty_cache(kCPU);
  // Half the activations, rounded down to whole segments, plus one segment:
  // eviction weighs measured forward times (src/checkpoint/evict.cpp), so
  // which tensors it frees, and how the freed blocks fall into 2 MiB
  // segments, varies with the machine's load; without the spare segment a
  // loaded run could be left with free memory split below one new segment.
  constexpr int64_t kSegment = int64_t{2} << 20;
  const int64_t limit =
      (memory::stats(kCPU).reserved_bytes.current + kept + activations / 2) / kSegment * kSegment +
      kSegment;
  const memory::Stats before = memory::stats(kCPU);
  Trace limited;
  {
    BudgetGuard guard(kCPU, limit);
    memory::reset_peak_stats(kCPU);
    manual_seed(100);
    limited = train(*model, inputs, targets, none, steps);
  }
  const memory::Stats after = memory::stats(kCPU);
  EXPECT_LE(after.reserved_bytes.peak, limit);
  EXPECT_GT(after.num_regenerations, before.num_regenerations);
  EXPECT_EQ(limited.losses, plain.losses);
  EXPECT_EQ(limited.grads, plain.grads);
}

}  // namespace

// The transformer example's model at a size whose activations span many 2
// MiB segments. (At test sizes the MLP's and the ResNet's peaks are single
// temporaries, a weight's gradient and conv2d's im2col buffer, which no
// eviction can split; their block families are tested in test_evict.cpp.)
TEST(ExampleModels, TransformerTrainsTheSameUnderAMemoryLimit) {
  manual_seed(4);
  const int64_t vocab = 16, context = 64;
  const Tensor tokens = reshape(argmax(rand({32 * context, vocab}), 1), {32, context});
  const Tensor targets = concat({slice(tokens, 1, 1, context), slice(tokens, 1, 0, 1)}, 1);
  check_under_memory_limit(
      [&] {
        manual_seed(5);
        return std::make_shared<examples::CharTransformer>(vocab, context, 64, 4, 3, 0.1);
      },
      tokens, targets, 4);
}
