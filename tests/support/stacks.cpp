#include "support/stacks.h"

namespace remat::testing {

Stack mlp_stack(int64_t batch) {
  manual_seed(1);
  auto seq = std::make_shared<nn::Sequential>();
  for (int i = 0; i < 8; ++i) {
    auto block = std::make_shared<nn::Sequential>();
    block->push_back(std::make_shared<nn::Linear>(128, 512));
    block->push_back(std::make_shared<nn::GELU>());
    block->push_back(std::make_shared<nn::Linear>(512, 128));
    block->push_back(std::make_shared<nn::Dropout>(0.1));
    seq->push_back(block);
  }
  return {"mlp", seq, randn({batch, 128})};
}

Stack transformer_stack(int64_t batch) {
  manual_seed(2);
  auto seq = std::make_shared<nn::Sequential>();
  for (int i = 0; i < 6; ++i) {
    seq->push_back(std::make_shared<nn::TransformerBlock>(64, 4, true, 0.1));
  }
  return {"transformer", seq, randn({batch, 64, 64})};
}

Stack resnet_stack(int64_t batch) {
  manual_seed(3);
  auto seq = std::make_shared<nn::Sequential>();
  for (int i = 0; i < 6; ++i) seq->push_back(std::make_shared<nn::BasicBlock>(16, 16));
  return {"resnet", seq, randn({batch, 16, 16, 16})};
}

std::vector<std::vector<float>> gradients(const std::vector<Tensor>& params) {
  std::vector<std::vector<float>> out;
  for (const Tensor& p : params) out.push_back(p.grad().to_vector<float>());
  return out;
}

std::vector<std::vector<float>> gradients(const Stack& s) {
  return gradients(s.blocks->parameters());
}

Training::Training(Stack stack) : s(std::move(stack)) {
  const int64_t width = s.x.shape().back();
  head = std::make_shared<nn::Linear>(width, 4 * width);
  target = zeros({s.x.numel() / width, 4 * width});
  std::vector<Tensor> params = s.blocks->parameters();
  for (const Tensor& p : head->parameters()) params.push_back(p);
  opt = std::make_unique<optim::AdamW>(params, optim::AdamOptions{.lr = 0.0});
}

int64_t Training::step(const CheckpointPlan& plan, const CheckpointOptions& opts) {
  manual_seed(9);  // dropout draws the same numbers every step
  // Gradients stay allocated, as the budget planner assumes (it counts them
  // in what is alive when the stack starts; docs/checkpointing.md).
  opt->zero_grad(/*set_to_none=*/false);
  memory::reset_peak_stats(kCPU);
  {
    Tensor h = checkpoint_blocks(s.blocks->functions(), s.x, plan, opts);
    Tensor y = (*head)(reshape(h, {-1, h.shape().back()}));
    backward(mse_loss(y, target));
  }
  opt->step();
  return memory::stats(kCPU).allocated_bytes.peak;
}

}  // namespace remat::testing
