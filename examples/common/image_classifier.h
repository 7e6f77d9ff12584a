// The Fashion-MNIST training loop shared by the mlp and resnet examples:
// epochs of shuffled mini-batches, AdamW or SGD with a cosine schedule, test
// accuracy after each epoch, then the summary table and metrics JSON.
#pragma once

#include <functional>
#include <string>

#include "report.h"
#include "run_options.h"

namespace examples {

struct ClassifierTraining {
  int64_t epochs = 10;
  int64_t max_steps = 0;            // > 0: stop after this many steps (quick runs)
  std::string optimizer = "adamw";  // adamw or sgd (momentum 0.9, nesterov)
  double lr = 1e-3;
  double weight_decay = 1e-2;
  int64_t warmup_steps = 100;
  std::string data_dir;  // empty: the dataset's default directory

  // Adds --epochs, --steps, --optimizer, --lr, --weight-decay, --data.
  void add_options(CLI::App& app);
};

// images [B, 1, 28, 28] -> logits [B, 10], checkpointed as the plan says.
using ClassifierForward =
    std::function<remat::Tensor(const remat::Tensor&, const remat::CheckpointPlan&)>;

// Trains on the training split and evaluates on the test split; prints and
// writes the results. Returns the process exit code.
int train_fashion_mnist(const std::string& name, remat::nn::Module& model,
                        const ClassifierForward& forward, const ClassifierTraining& training,
                        const RunOptions& run);

}  // namespace examples
