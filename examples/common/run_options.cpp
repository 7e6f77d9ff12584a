#include "run_options.h"

#include <cstdio>

#include "remat/distributed.h"

namespace examples {

remat::Device RunOptions::parsed_device() const {
  if (device == "cpu") return remat::kCPU;
  if (device == "cuda") {
    if (!remat::cuda_is_available()) {
      throw remat::Error("--device cuda: no CUDA device is available on this machine");
    }
    return remat::Device::cuda(0);
  }
  throw remat::Error(fmt::format("--device: expected cpu or cuda, got '{}'", device));
}

namespace {

// A CLI11 check: empty (valid) when `parse` accepts the text, else its error.
template <typename Parse>
auto accepted_by(Parse parse) {
  return [parse](const std::string& text) {
    try {
      parse(text);
      return std::string();
    } catch (const remat::Error& e) {
      return std::string(e.what());
    }
  };
}

}  // namespace

std::unique_ptr<remat::BudgetGuard> RunOptions::memory_guard(remat::Device on) const {
  if (memory_limit.empty()) return nullptr;
  return std::make_unique<remat::BudgetGuard>(on, remat::parse_bytes(memory_limit));
}

int RunOptions::start_ranks() {
  if (!ddp) return 0;
  const int rank = remat::distributed::ProcessGroup::world().rank();
  if (rank != 0) {
    if (std::freopen("/dev/null", "w", stdout) == nullptr) throw remat::Error("no /dev/null");
    metrics_path = "/dev/null";
    quiet = true;
  }
  return rank;
}

std::unique_ptr<remat::optim::Optimizer> RunOptions::make_optimizer(
    std::vector<remat::Tensor> params, const OptimizerFactory& make) const {
  if (!zero) return make(std::move(params));
  return std::make_unique<remat::distributed::ZeroRedundancyOptimizer>(std::move(params), make);
}

std::unique_ptr<remat::distributed::DistributedDataParallel> RunOptions::make_ddp(
    remat::nn::Module& model, const remat::optim::Optimizer& optimizer) const {
  if (!ddp) return nullptr;
  remat::distributed::DdpOptions options;
  if (zero == 2) {
    options.gradient_owners =
        dynamic_cast<const remat::distributed::ZeroRedundancyOptimizer&>(optimizer).owners();
  }
  return std::make_unique<remat::distributed::DistributedDataParallel>(
      std::shared_ptr<remat::nn::Module>(std::shared_ptr<void>(), &model), options);
}

double RunOptions::clip_grad_norm(const std::vector<remat::Tensor>& params, double max_norm) const {
  if (zero == 2) {
    return remat::distributed::clip_grad_norm(params, max_norm,
                                              remat::distributed::ProcessGroup::world());
  }
  return remat::optim::clip_grad_norm(params, max_norm);
}

void add_run_options(CLI::App& app, RunOptions& options, const std::string& name) {
  options.metrics_path = name + "_metrics.json";
  app.add_option("--device", options.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--batch", options.batch, "examples per step")->capture_default_str();
  app.add_option("--seed", options.seed, "seed for initialisation, data order and dropout")
      ->capture_default_str();
  app.add_option(
         "--checkpoint", options.checkpoint,
         "checkpoint plan: none, block, every-N, alternate, sqrt, selective, nested, "
         "offload, offload-inputs, compress-bf16, compress-int8, compress-fp8 (every "
         "block a segment whose kept activations are offloaded or compressed; lossy for "
         "compress), budget:SIZE (e.g. budget:2GiB: the planner's schedule for a training step "
         "whose peak of allocated memory stays within SIZE; docs/checkpointing.md) or "
         "budget-offload:SIZE (the same, the planner also offloading blocks)")
      ->check(accepted_by([](const std::string& plan) { remat::CheckpointPlan::parse(plan); }))
      ->capture_default_str();
  app.add_option("--memory-limit", options.memory_limit,
                 "train under a hard memory limit of SIZE on the device (e.g. 512MiB): "
                 "saved tensors are evicted and regenerated from the tape as needed, with the "
                 "same gradients; works with any --checkpoint plan (docs/checkpointing.md)")
      ->check(accepted_by([](const std::string& size) { remat::parse_bytes(size); }));
  app.add_option("--metrics", options.metrics_path, "where to write the metrics JSON")
      ->capture_default_str();
  app.add_flag("--quiet", options.quiet, "no progress bar");
  app.add_flag("--ddp", options.ddp,
               "data-parallel training across the processes mpirun started (mpirun -np 2 ... "
               "--ddp): each rank trains its own --batch, gradients are averaged, rank 0 "
               "reports (docs/distributed.md)");
  app.add_flag("--zero{1}", options.zero,
               "with --ddp: shard the optimizer's state across the ranks (ZeRO stage 1: each "
               "rank updates its share of the parameters, then broadcasts them); --zero=2 "
               "shards the gradients too (each is reduced to the rank that updates it)")
      ->check(CLI::Range(1, 2))
      ->needs("--ddp");
}

int parse_or_exit_code(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return -1;
}

}  // namespace examples
