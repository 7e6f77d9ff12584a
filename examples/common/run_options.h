// Flags every example shares (--device, --steps/--epochs, --batch, --seed,
// --checkpoint, --memory-limit, --metrics, --ddp, --zero), parsed with CLI11.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "remat/distributed.h"
#include "remat/remat.h"

namespace examples {

struct RunOptions {
  std::string device = "cpu";
  int64_t batch = 0;
  uint64_t seed = 0;
  std::string checkpoint = "none";
  std::string memory_limit;  // empty: none
  std::string metrics_path;
  bool quiet = false;  // no progress bar
  bool ddp = false;    // data-parallel across the processes mpirun started
  int zero = 0;        // with ddp: ZeRO stage (1: optimizer state sharded, 2: gradients too)

  remat::Device parsed_device() const;
  remat::CheckpointPlan parsed_plan() const { return remat::CheckpointPlan::parse(checkpoint); }
  // A BudgetGuard on the device for the run's training, when --memory-limit is given.
  // Null without it.
  std::unique_ptr<remat::BudgetGuard> memory_guard(remat::Device on) const;
  // With --ddp: this process's rank (initialising MPI); on every rank but 0
  // the output goes to /dev/null (quiet, no metrics file), since rank 0
  // reports. 0 without --ddp.
  int start_ranks();
  // The optimizer `make` builds over params, or with --zero a
  // ZeroRedundancyOptimizer that shards it (each rank builds `make` over its
  // own parameters).
  using OptimizerFactory =
      std::function<std::unique_ptr<remat::optim::Optimizer>(std::vector<remat::Tensor>)>;
  std::unique_ptr<remat::optim::Optimizer> make_optimizer(std::vector<remat::Tensor> params,
                                                          const OptimizerFactory& make) const;
  // With --ddp, model's DistributedDataParallel (a non-owning handle: the
  // model outlives it), which broadcasts rank 0's weights; with --zero=2 it
  // reduces each gradient to the rank that `optimizer` (make_optimizer's)
  // has update it. Null without --ddp.
  std::unique_ptr<remat::distributed::DistributedDataParallel> make_ddp(
      remat::nn::Module& model, const remat::optim::Optimizer& optimizer) const;
  // optim::clip_grad_norm, or under --zero=2 the norm over every rank's
  // share of the gradients (distributed::clip_grad_norm).
  double clip_grad_norm(const std::vector<remat::Tensor>& params, double max_norm) const;
};

// Adds the shared flags to app. `name` picks the default metrics file
// (<name>_metrics.json).
void add_run_options(CLI::App& app, RunOptions& options, const std::string& name);

// Parses argv; on --help or a bad flag prints and returns the exit code to
// use, otherwise returns -1.
int parse_or_exit_code(CLI::App& app, int argc, char** argv);

}  // namespace examples
