// bench_checkpoint: peak memory and step time of one model under several
// checkpoint plans, measured in one process so the ratios compare like with
// like. For each plan: a fresh model from the same seed, warm-up steps (the
// caching allocator fills, the optimizer state is created), then timed
// training steps (forward, backward, AdamW step). Reports the median step
// time, its ratio to the first plan, the activation peak (peak allocated
// during a step minus what was allocated before it: parameters, gradients,
// optimizer state, input), peak reserved bytes and the ops replayed per step.
// Prints a table and writes JSON and CSV.
//
//   bench_checkpoint --model transformer --depth 16 --plans none,block,selective
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "remat/remat.h"

namespace {

using remat::Tensor;
namespace nn = remat::nn;

struct Config {
  std::string model = "transformer";
  std::string device = "cpu";
  std::string plans = "none,block,selective,sqrt,every-2,nested";
  int64_t depth = 16;
  int64_t batch = 4;
  int64_t seq = 256;    // transformer tokens per sample
  int64_t width = 256;  // d_model (transformer) or hidden size (mlp)
  int64_t heads = 4;
  int64_t warmup = 2;
  int64_t steps = 5;
  uint64_t seed = 0;
  std::string json_path = "bench_checkpoint.json";
  std::string csv_path = "bench_checkpoint.csv";
};

// A stack of identical blocks on a random input; the loss is the mean square
// of the output.
struct Workload {
  std::shared_ptr<nn::Sequential> blocks;
  Tensor input;
};

Workload make_workload(const Config& c, remat::Device device) {
  remat::manual_seed(c.seed);
  auto blocks = std::make_shared<nn::Sequential>();
  Tensor input;
  if (c.model == "transformer") {
    for (int64_t i = 0; i < c.depth; ++i) {
      blocks->push_back(std::make_shared<nn::TransformerBlock>(c.width, c.heads, true));
    }
    input = remat::randn({c.batch, c.seq, c.width});
  } else if (c.model == "mlp") {
    for (int64_t i = 0; i < c.depth; ++i) {
      blocks->push_back(std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
          std::make_shared<nn::Linear>(c.width, c.width), std::make_shared<nn::ReLU>()}));
    }
    input = remat::randn({c.batch, c.width});
  } else {
    throw remat::Error(fmt::format("--model: expected transformer or mlp, got '{}'", c.model));
  }
  blocks->to(device);
  return {blocks, input.to(device)};
}

struct PlanResult {
  std::string plan;
  double median_step_ms = 0;
  int64_t activation_peak = 0;
  int64_t peak_reserved = 0;
  int64_t replayed_ops = 0;
};

PlanResult measure(const Config& c, remat::Device device, const remat::CheckpointPlan& plan) {
  remat::memory::empty_cache(device);
  Workload w = make_workload(c, device);
  remat::optim::AdamW optimizer(w.blocks->parameters(), {.lr = 1e-4});
  const auto fns = w.blocks->functions();
  PlanResult r{plan.name()};
  std::vector<double> times;
  for (int64_t step = 0; step < c.warmup + c.steps; ++step) {
    const bool timed = step >= c.warmup;
    remat::synchronize(device);
    const int64_t before = remat::memory::stats(device).allocated_bytes.current;
    remat::memory::reset_peak_stats(device);
    remat::reset_checkpoint_stats();
    const auto start = std::chrono::steady_clock::now();
    const Tensor out = remat::checkpoint_blocks(fns, w.input, plan);
    remat::mean(out * out).backward();
    optimizer.step();
    optimizer.zero_grad();
    remat::synchronize(device);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!timed) continue;
    times.push_back(ms);
    const remat::memory::Stats stats = remat::memory::stats(device);
    r.activation_peak = std::max(r.activation_peak, stats.allocated_bytes.peak - before);
    r.peak_reserved = std::max(r.peak_reserved, stats.reserved_bytes.peak);
    r.replayed_ops = remat::checkpoint_stats().ops_replayed;
  }
  std::sort(times.begin(), times.end());
  r.median_step_ms = times[times.size() / 2];
  return r;
}

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

int main(int argc, char** argv) try {
  Config c;
  CLI::App app("bench_checkpoint: peak memory and step time per checkpoint plan",
               "bench_checkpoint");
  app.add_option("--model", c.model, "transformer or mlp")->capture_default_str();
  app.add_option("--device", c.device, "cpu or cuda")->capture_default_str();
  app.add_option("--plans", c.plans, "comma-separated plans (docs/checkpointing.md)")
      ->capture_default_str();
  app.add_option("--depth", c.depth, "blocks")->capture_default_str();
  app.add_option("--batch", c.batch, "samples per step")->capture_default_str();
  app.add_option("--seq", c.seq, "tokens per sample (transformer)")->capture_default_str();
  app.add_option("--width", c.width, "d_model (transformer) or hidden size (mlp)")
      ->capture_default_str();
  app.add_option("--heads", c.heads, "attention heads (transformer)")->capture_default_str();
  app.add_option("--warmup", c.warmup, "untimed steps per plan")->capture_default_str();
  app.add_option("--steps", c.steps, "timed steps per plan (the median is reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", c.seed, "seed of the weights and input")->capture_default_str();
  app.add_option("--json", c.json_path, "JSON output")->capture_default_str();
  app.add_option("--csv", c.csv_path, "CSV output")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const remat::Device device = c.device == "cuda" ? remat::Device::cuda(0) : remat::kCPU;
  std::vector<PlanResult> results;
  std::stringstream names(c.plans);
  for (std::string name; std::getline(names, name, ',');) {
    results.push_back(measure(c, device, remat::CheckpointPlan::parse(name)));
  }

  const PlanResult& base = results.front();
  fmt::print("{} x{} (width {}, batch {}{}), {}, median of {} steps after {} warm-up\n", c.model,
             c.depth, c.width, c.batch,
             c.model == "transformer" ? fmt::format(", seq {}", c.seq) : "", device, c.steps,
             c.warmup);
  fmt::print("{:<10} {:>10} {:>8} {:>16} {:>9} {:>14} {:>9}\n", "plan", "step ms", "time",
             "activation peak", "memory", "peak reserved", "replayed");
  nlohmann::ordered_json json = {
      {"model", c.model}, {"device", device.str()}, {"depth", c.depth},
      {"batch", c.batch}, {"seq", c.seq},           {"width", c.width},
      {"heads", c.heads}, {"steps", c.steps},       {"runs", nlohmann::json::array()}};
  std::ofstream csv(c.csv_path);
  csv << "model,device,depth,batch,seq,width,plan,median_step_ms,time_ratio,activation_peak_bytes,"
         "memory_ratio,peak_reserved_bytes,replayed_ops\n";
  for (const PlanResult& r : results) {
    const double time_ratio = r.median_step_ms / base.median_step_ms;
    const double memory_ratio =
        static_cast<double>(r.activation_peak) / static_cast<double>(base.activation_peak);
    fmt::print("{:<10} {:>10.1f} {:>7.2f}x {:>12.1f} MiB {:>8.1f}% {:>10.1f} MiB {:>9}\n", r.plan,
               r.median_step_ms, time_ratio, mib(r.activation_peak), 100 * memory_ratio,
               mib(r.peak_reserved), r.replayed_ops);
    json["runs"].push_back({{"plan", r.plan},
                            {"median_step_ms", r.median_step_ms},
                            {"time_ratio", time_ratio},
                            {"activation_peak_bytes", r.activation_peak},
                            {"memory_ratio", memory_ratio},
                            {"peak_reserved_bytes", r.peak_reserved},
                            {"replayed_ops", r.replayed_ops}});
    csv << fmt::format("{},{},{},{},{},{},{},{:.3f},{:.4f},{},{:.4f},{},{}\n", c.model,
                       device.str(), c.depth, c.batch, c.seq, c.width, r.plan, r.median_step_ms,
                       time_ratio, r.activation_peak, memory_ratio, r.peak_reserved,
                       r.replayed_ops);
  }
  std::ofstream(c.json_path) << json.dump(2) << '\n';
  fmt::print("wrote {} and {}\n", c.json_path, c.csv_path);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "bench_checkpoint: {}\n", e.what());
  return 1;
}
