// The models the benchmark binaries train (docs/benchmarks.md): a deep MLP, a
// CIFAR-style ResNet and a causal pre-norm transformer, each a stack of
// blocks that a checkpoint plan wraps, with its input, loss and AdamW.
// benchmarks/pytorch/bench_checkpoint.py builds the same models in PyTorch.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "remat/distributed.h"
#include "remat/nn/nn.h"
#include "remat/optim/optim.h"
#include "remat/remat.h"

namespace bench {

struct ModelConfig {
  std::string model = "transformer";  // mlp, resnet or transformer
  int64_t depth = 16;                 // blocks
  int64_t batch = 4;
  int64_t width = 256;  // mlp: hidden size; resnet: first stage's channels; transformer: d_model
  int64_t seq = 256;    // transformer: tokens per sample
  int64_t heads = 4;    // transformer
  std::string activation = "gelu";  // transformer MLP: gelu or relu
  std::string attention = "fused";  // transformer: fused or math (AttentionImpl)
  int64_t image = 32;               // resnet: input height and width

  // Throws remat::Error naming the flag at fault.
  void validate() const;
  // The fields that apply to the model, in a fixed order.
  nlohmann::ordered_json to_json() const;
  // "mlp depth=10 batch=64 width=1024": the join key with the PyTorch side
  // (attention=math left out, as runs before the fused attention had it).
  std::string key() const;
  // The key without the attention choice, which changes no weight: the name
  // of the saved state that both attention paths (and PyTorch's) start from.
  std::string weights_key() const;
};

// A checkpoint plan: a remat::CheckpointPlan over the model's blocks, or, for
// the transformer, segments around the sublayers of every block: "attn"
// (x + attn(ln1(x))), "mlp" (h + mlp(ln2(h))) or "attn+mlp" (each half its own
// segment).
struct Plan {
  std::string name;
  remat::CheckpointPlan blocks;
  bool attention_segment = false;
  bool mlp_segment = false;

  // Throws remat::Error for an unknown name or a sublayer plan on a model
  // without sublayers.
  static Plan parse(const std::string& name, const std::string& model);
};

// One model with its input (and labels), trained with AdamW(lr 1e-4).
class Workload {
 public:
  Workload(const ModelConfig& config, remat::DType dtype, remat::Device device, uint64_t seed);
  ~Workload();

  // One training step: forward under the plan, loss, backward, AdamW step and
  // zero_grad, with the allocator timeline tagged "forward", "backward" (by
  // the engine) and "optimizer". Returns the loss (not synchronised).
  remat::Tensor step(const Plan& plan);
  // From here on, gradients are averaged across the processes mpirun started
  // (DistributedDataParallel); with zero_stage 1, AdamW's state is sharded
  // across them too (ZeroRedundancyOptimizer), with 2 also the gradients
  // (DdpOptions::gradient_owners). bucket_views: gradients as views into the
  // buckets (DdpOptions::gradient_as_bucket_view). Every rank trains its own
  // batch of the configured size.
  void distribute(int zero_stage, bool bucket_views);
  // Bytes of AdamW state this process holds.
  int64_t optimizer_state_bytes() const;
  // DistributedDataParallel's counters (null before distribute()).
  const remat::distributed::DistributedDataParallel::Stats* ddp_stats() const {
    return ddp_ ? &ddp_->stats() : nullptr;
  }
  // The model's state and the input (and labels) in one safetensors file,
  // the names of benchmarks/pytorch/bench_checkpoint.py.
  void save_state(const std::string& path) const;

 private:
  remat::Tensor forward(const Plan& plan);
  static std::unique_ptr<remat::optim::AdamW> make_adamw(std::vector<remat::Tensor> params);

  ModelConfig config_;
  std::shared_ptr<remat::nn::Module> model_;
  std::vector<std::function<remat::Tensor(const remat::Tensor&)>> blocks_;
  std::vector<std::shared_ptr<remat::nn::TransformerBlock>> transformer_blocks_;
  remat::Tensor input_;
  remat::Tensor labels_;                                // resnet
  std::unique_ptr<remat::optim::Optimizer> optimizer_;  // AdamW, or ZeRO over AdamW
  std::unique_ptr<remat::distributed::DistributedDataParallel> ddp_;
};

// The activation peak of one training step of the MLP that docs/checkpointing.md's
// memory model predicts for the plan; nullopt for other models and for the
// transformer-only plans.
std::optional<int64_t> predicted_activation_bytes(const ModelConfig& config, remat::DType dtype,
                                                  const Plan& plan);

}  // namespace bench
