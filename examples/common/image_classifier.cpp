#include "image_classifier.h"

#include <memory>

#include "remat/data/data.h"
#include "remat/distributed.h"
#include "remat/optim/optim.h"

namespace examples {

using remat::Tensor;
namespace data = remat::data;
namespace optim = remat::optim;

void ClassifierTraining::add_options(CLI::App& app) {
  app.add_option("--epochs", epochs, "passes over the 60000 training images")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--steps", max_steps, "stop after this many steps (0: run every epoch)")
      ->capture_default_str();
  app.add_option("--optimizer", optimizer, "adamw or sgd (momentum 0.9, nesterov)")
      ->check(CLI::IsMember({"adamw", "sgd"}))
      ->capture_default_str();
  app.add_option("--lr", lr, "peak learning rate (cosine schedule with warmup)")
      ->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "weight decay")->capture_default_str();
  app.add_option("--data", data_dir,
                 "Fashion-MNIST directory (default: $REMAT_FASHION_MNIST_DIR or "
                 "/usr/share/datasets/fashion-mnist)");
}

namespace {

// Share of correctly classified test images, in eval mode without a tape.
double test_accuracy(remat::nn::Module& model, const ClassifierForward& forward,
                     const data::LabeledImages& test, remat::Device device, int64_t batch) {
  remat::NoGradGuard no_grad;
  model.eval();
  data::DataLoader loader(test.images, test.labels, {.batch_size = batch, .shuffle = false});
  int64_t correct = 0;
  for (const data::Batch b : loader.epoch(0)) {
    const Tensor predicted = remat::argmax(forward(b.inputs.to(device), {}), 1).to(remat::kCPU);
    const auto p = predicted.to_vector<int64_t>();
    const auto t = b.targets.to_vector<int64_t>();
    for (size_t i = 0; i < p.size(); ++i) correct += p[i] == t[i];
  }
  model.train();
  return static_cast<double>(correct) / static_cast<double>(test.labels.size(0));
}

std::unique_ptr<optim::Optimizer> make_optimizer(const ClassifierTraining& t,
                                                 std::vector<Tensor> params) {
  if (t.optimizer == "sgd") {
    return std::make_unique<optim::SGD>(
        std::move(params),
        optim::SGDOptions{
            .lr = t.lr, .momentum = 0.9, .weight_decay = t.weight_decay, .nesterov = true});
  }
  return std::make_unique<optim::AdamW>(
      std::move(params), optim::AdamOptions{.lr = t.lr, .weight_decay = t.weight_decay});
}

}  // namespace

int train_fashion_mnist(const std::string& name, remat::nn::Module& model,
                        const ClassifierForward& forward, const ClassifierTraining& training,
                        const RunOptions& run) {
  const remat::Device device = run.parsed_device();
  const remat::CheckpointPlan plan = run.parsed_plan();
  const data::fashion_mnist::Options source{.directory = training.data_dir, .normalize = true};
  const data::LabeledImages train = data::fashion_mnist::load("train", source);
  const data::LabeledImages test = data::fashion_mnist::load("test", source);
  fmt::print("{}: Fashion-MNIST from {}: {} training, {} test images; {} parameters; plan {}\n",
             name,
             training.data_dir.empty() ? data::fashion_mnist::default_directory().string()
                                       : training.data_dir,
             train.labels.size(0), test.labels.size(0), model.num_parameters(), plan.name());

  model.to(device);
  auto optimizer = run.make_optimizer(model.parameters(), [&training](std::vector<Tensor> params) {
    return make_optimizer(training, std::move(params));
  });
  // Under --ddp every epoch's shuffled order is shared among the ranks, each
  // taking every size()-th sample (DistributedSampler's interleave).
  const auto ddp = run.make_ddp(model, *optimizer);
  data::LoaderOptions sampling{.batch_size = run.batch, .seed = run.seed, .drop_last = true};
  if (ddp) {
    sampling.num_replicas = ddp->group().size();
    sampling.rank = ddp->group().rank();
  }
  data::DataLoader loader(train.images, train.labels, sampling);
  const int64_t planned = training.epochs * loader.num_batches();
  const int64_t total_steps =
      training.max_steps > 0 ? std::min(training.max_steps, planned) : planned;
  optim::CosineWithWarmup schedule(*optimizer, std::min(training.warmup_steps, total_steps - 1),
                                   total_steps);

  remat::memory::reset_peak_stats(device);
  const int64_t baseline = remat::memory::stats(device).allocated_bytes.current;
  const std::unique_ptr<remat::BudgetGuard> guard = run.memory_guard(device);
  StepLog log(total_steps, "img", !run.quiet);
  std::vector<double> accuracies;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < training.epochs && step < total_steps; ++epoch) {
    for (const data::Batch b : loader.epoch(epoch)) {
      if (step == total_steps) break;
      StepTimer timer(device);
      const Tensor loss =
          remat::cross_entropy(forward(b.inputs.to(device), plan), b.targets.to(device));
      loss.backward();
      optimizer->step();
      optimizer->zero_grad();
      schedule.step();
      const double value = loss.item<double>();
      log.record(value, timer.seconds(), run.batch);
      if (step == 1 && plan.kind == remat::CheckpointPlan::Kind::Budget && !run.quiet) {
        fmt::print("{}", plan.describe());
      }
      ++step;
    }
    log.finish();
    accuracies.push_back(test_accuracy(model, forward, test, device, 1000));
    fmt::print("epoch {}: test accuracy {:.2f}%\n", epoch + 1, 100 * accuracies.back());
  }

  Summary summary(
      fmt::format("{} on Fashion-MNIST ({}, checkpoint {})", name, device, plan.name()));
  summary.add("steps", "steps", static_cast<double>(step), fmt::format("{}", step));
  summary.add("final_loss", "final training loss", log.losses().back(),
              fmt::format("{:.4f}", log.losses().back()));
  summary.add("test_accuracy", "test accuracy", accuracies.back(),
              fmt::format("{:.2f}%", 100 * accuracies.back()));
  summary.add_steps_and_memory(log, device, baseline);
  summary.add("checkpoint", "checkpoint plan", plan.name());
  summary.add("memory_limit", "memory limit", run.memory_limit.empty() ? "none" : run.memory_limit);
  summary.add_json("test_accuracy_per_epoch", accuracies);
  summary.print();
  summary.write_json(run.metrics_path);
  return 0;
}

}  // namespace examples
