// Block stacks of the three example model families, small enough for tests,
// and a training step over one of them: what the budget planner's tests and
// the eviction mode's tests both train.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "remat/remat.h"

namespace remat::testing {

struct Stack {
  std::string name;
  std::shared_ptr<nn::Sequential> blocks;
  Tensor x;
};

// 8 blocks of Linear-GELU-Linear-Dropout, width 128 (512 inside).
Stack mlp_stack(int64_t batch = 256);
// 6 pre-norm transformer blocks, width 64, 4 heads, sequence 64, causal.
Stack transformer_stack(int64_t batch = 2);
// 6 basic residual blocks of 16 channels on 16x16 images.
Stack resnet_stack(int64_t batch = 4);

// The .grad of every tensor, in order; of every parameter of the stack.
std::vector<std::vector<float>> gradients(const std::vector<Tensor>& params);
std::vector<std::vector<float>> gradients(const Stack& s);

// A training step of a stack: the blocks, a linear head with a loss, and
// AdamW at learning rate 0, so that every step computes the same gradients
// from the same parameters with a real step's memory (gradients, optimizer
// state, the head's activations).
struct Training {
  Stack s;
  std::shared_ptr<nn::Linear> head;
  Tensor target;
  std::unique_ptr<optim::AdamW> opt;

  explicit Training(Stack stack);
  // The step's peak of allocated bytes (absolute, as a budget is).
  int64_t step(const CheckpointPlan& plan = CheckpointPlan::parse("none"),
               const CheckpointOptions& opts = {});
};

}  // namespace remat::testing
