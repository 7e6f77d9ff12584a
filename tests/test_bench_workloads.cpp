// The benchmark models of benchmarks/common/workload.h: the join key with the
// PyTorch side, the MLP memory model against the allocator, and the
// transformer's sublayer plans.
#include <gtest/gtest.h>

#include "common/workload.h"

namespace {

using bench::ModelConfig;
using bench::Plan;
using remat::Tensor;

// Activation bytes of one training step after two warm-up steps (the second
// is the first to accumulate into existing gradients).
int64_t activation_bytes(const ModelConfig& config, const std::string& plan_name,
                         double* loss = nullptr) {
  bench::Workload workload(config, remat::kFloat32, remat::kCPU, 7);
  const Plan plan = Plan::parse(plan_name, config.model);
  for (int warmup = 0; warmup < 2; ++warmup) {
    const Tensor first = workload.step(plan);
    if (warmup == 0 && loss) *loss = first.item<double>();
  }
  const int64_t before = remat::memory::stats(remat::kCPU).allocated_bytes.current;
  remat::memory::reset_peak_stats(remat::kCPU);
  workload.step(plan);
  return remat::memory::stats(remat::kCPU).allocated_bytes.peak - before;
}

TEST(BenchWorkloads, KeysNameTheFieldsOfEachModelInOrder) {
  EXPECT_EQ((ModelConfig{.model = "mlp", .depth = 10, .batch = 64, .width = 1024}).key(),
            "mlp depth=10 batch=64 width=1024");
  EXPECT_EQ((ModelConfig{.model = "resnet", .depth = 8, .batch = 32, .width = 64}).key(),
            "resnet depth=8 batch=32 width=64 image=32");
  ModelConfig transformer{.model = "transformer",
                          .depth = 12,
                          .batch = 1,
                          .width = 512,
                          .seq = 4096,
                          .heads = 4,
                          .activation = "relu"};
  const std::string weights =
      "transformer depth=12 batch=1 seq=4096 width=512 heads=4 activation=relu";
  EXPECT_EQ(transformer.key(), weights + " attention=fused");
  EXPECT_EQ(transformer.weights_key(), weights);
  // The math attention keeps the key it had before the fused one existed.
  transformer.attention = "math";
  EXPECT_EQ(transformer.key(), weights);
  EXPECT_EQ(transformer.weights_key(), weights);
}

TEST(BenchWorkloads, RejectsBadConfigurationsAndPlans) {
  EXPECT_THROW(Plan::parse("attn", "mlp"), remat::Error);
  EXPECT_THROW(Plan::parse("sometimes", "transformer"), remat::Error);
  EXPECT_THROW((ModelConfig{.model = "resnet", .depth = 3}).validate(), remat::Error);
  EXPECT_THROW((ModelConfig{.model = "transformer", .width = 10, .heads = 4}).validate(),
               remat::Error);
  EXPECT_THROW((ModelConfig{.model = "lstm"}).validate(), remat::Error);
}

// docs/benchmarks.md's claim for the deep-MLP preset: measured peaks within
// 10% of the memory model, at a size where the activations (not the weight
// gradient) dominate.
TEST(BenchWorkloads, MlpPeaksMatchTheMemoryModel) {
  const ModelConfig config{.model = "mlp", .depth = 12, .batch = 256, .width = 128};
  for (const char* name : {"none", "block", "sqrt", "every-3", "alternate", "nested"}) {
    const Plan plan = Plan::parse(name, "mlp");
    const auto predicted = bench::predicted_activation_bytes(config, remat::kFloat32, plan);
    ASSERT_TRUE(predicted.has_value()) << name;
    const double measured = static_cast<double>(activation_bytes(config, name));
    EXPECT_NEAR(measured / static_cast<double>(*predicted), 1.0, 0.10) << name;
  }
  EXPECT_FALSE(
      bench::predicted_activation_bytes(config, remat::kFloat32, Plan::parse("selective", "mlp")));
}

// Checkpointing either sublayer saves memory, both save more, and the loss is
// the same computation in every plan.
TEST(BenchWorkloads, TransformerSublayerPlansSaveMemory) {
  const ModelConfig config{
      .model = "transformer", .depth = 3, .batch = 2, .width = 32, .seq = 64, .heads = 2};
  double loss_none = 0, loss = 0;
  const int64_t none = activation_bytes(config, "none", &loss_none);
  const int64_t attention = activation_bytes(config, "attn", &loss);
  EXPECT_EQ(loss, loss_none);
  const int64_t mlp = activation_bytes(config, "mlp", &loss);
  EXPECT_EQ(loss, loss_none);
  const int64_t both = activation_bytes(config, "attn+mlp", &loss);
  EXPECT_EQ(loss, loss_none);
  EXPECT_LT(attention, none);
  EXPECT_LT(mlp, none);
  EXPECT_LT(both, std::min(attention, mlp));
}

}  // namespace
