// bench_checkpoint: peak memory and step time of the MLP, ResNet and
// transformer under checkpoint plans, measured in one process so the ratios
// compare like with like (docs/benchmarks.md). For each model configuration
// and plan: a fresh model from the same seed, warm-up steps (the caching
// allocator fills, the optimizer state is created), then timed training steps
// (forward, backward, AdamW step, zero_grad; CUDA timed with events). Reports
// the median step time and its ratio to plan "none" of the same
// configuration, peak allocated and reserved bytes, the activation bytes
// (peak allocated during a step minus what was allocated before it:
// parameters, gradients, optimizer state, input), the ops replayed per step
// and raw allocations per step; for the MLP also the activation bytes the
// memory model of docs/checkpointing.md predicts. Prints a table and writes
// JSON and CSV (the shape benchmarks/pytorch/bench_checkpoint.py writes too),
// optionally the allocator timeline of one step per run. --budgets adds runs
// of the budget planner at fractions of plan none's activations: the
// memory/time frontier next to the hand plans; --offload-budgets likewise
// with the planner also offloading (budget-offload:SIZE). --limits adds runs of plan
// none under a BudgetGuard (the eviction mode) at fractions of plan none's
// activations, as for budgets; --memory-limit puts every run under one limit.
//
//   bench_checkpoint --preset long-seq
//   bench_checkpoint --model mlp --depth 10,20,40 --plans none,sqrt
//   bench_checkpoint --model transformer --depth 16 --budgets 0.3,0.5,0.7
//   bench_checkpoint --preset offload --offload-budgets 0.3,0.5,0.7
//   bench_checkpoint --model transformer --depth 16 --limits 0.3,0.5,0.7
//
// Under mpirun with --ddp each process trains its own batch with
// DistributedDataParallel (--zero: and AdamW's state sharded, ZeRO-1; --zero=2:
// the gradients too, ZeRO-2); rank 0
// prints and writes the results, with each rank's step time, peak memory and
// optimizer state (docs/distributed.md):
//   mpirun -np 2 bench_checkpoint --model mlp --depth 8 --plans none,block --ddp
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#if defined(REMAT_WITH_CUDA)
#include <cuda_runtime.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "common/flags.h"
#include "common/median.h"

namespace {

using bench::mib;
using bench::ModelConfig;
using bench::Plan;

// One configuration and the plans it runs under.
struct Sweep {
  ModelConfig config;
  std::vector<std::string> plans;
};

struct Preset {
  std::string description;
  std::string dtype;
  std::vector<Sweep> sweeps;
};

ModelConfig mlp(int64_t depth) {
  return {.model = "mlp", .depth = depth, .batch = 64, .width = 1024};
}

// The transformer presets, with either attention.
ModelConfig long_seq(const char* attention) {
  return {.model = "transformer",
          .depth = 12,
          .batch = 1,
          .width = 512,
          .seq = 4096,
          .heads = 4,
          .activation = "relu",
          .attention = attention};
}
ModelConfig wide(const char* attention) {
  return {.model = "transformer",
          .depth = 20,
          .batch = 4,
          .width = 1024,
          .seq = 512,
          .heads = 16,
          .activation = "gelu",
          .attention = attention};
}

// The classic experiments of docs/benchmarks.md.
const std::map<std::string, Preset>& presets() {
  static const std::map<std::string, Preset> table = {
      {"deep-mlp",
       {"MLP, hidden 1024, batch 64, depth 10/20/40/80; more plans at depth 40",
        "float32",
        {{mlp(10), {"none", "block", "sqrt"}},
         {mlp(20), {"none", "block", "sqrt"}},
         {mlp(40), {"none", "block", "sqrt", "alternate", "nested"}},
         {mlp(80), {"none", "block", "sqrt"}}}}},
      {"resnet",
       {"ResNet, 8 BasicBlocks (64 then 128 channels), batch 32, 32x32 inputs",
        "float32",
        {{{.model = "resnet", .depth = 8, .batch = 32, .width = 64, .image = 32},
          {"none", "block", "alternate", "sqrt", "nested"}}}}},
      {"long-seq",
       {"transformer, 12 blocks, d_model 512, 4 heads, ReLU MLP, sequence 4096, batch 1; "
        "math attention, then fused",
        "bfloat16",
        {{long_seq("math"), {"none", "attn", "mlp", "attn+mlp", "alternate", "offload"}},
         {long_seq("fused"), {"none", "attn+mlp", "block"}}}}},
      {"wide",
       {"transformer, 20 blocks, d_model 1024, 16 heads, batch 4, sequence 512; math attention, "
        "then fused",
        "float32",
        {{wide("math"), {"none", "every-2", "block", "selective"}},
         {wide("fused"), {"none", "block"}}}}},
      {"offload",
       {"offload and compression: MLP depth 40 (hidden 1024, batch 512) and transformer 8 "
        "blocks (d_model 512, 8 heads, sequence 1024, batch 2)",
        "float32",
        {{{.model = "mlp", .depth = 40, .batch = 512, .width = 1024},
          {"none", "block", "offload", "offload-inputs", "compress-bf16", "compress-int8",
           "compress-fp8"}},
         {{.model = "transformer",
           .depth = 8,
           .batch = 2,
           .width = 512,
           .seq = 1024,
           .heads = 8,
           .activation = "gelu",
           .attention = "math"},
          {"none", "block", "offload", "offload-inputs", "compress-bf16", "compress-int8",
           "compress-fp8"}}}}},
  };
  return table;
}

// Wall time of a step; on CUDA, events on the current stream.
class StepTimer {
 public:
  explicit StepTimer(remat::Device device) : device_(device) {
#if defined(REMAT_WITH_CUDA)
    if (device_.is_cuda()) {
      cudaEventCreate(&start_event_);
      cudaEventCreate(&stop_event_);
    }
#endif
  }
  ~StepTimer() {
#if defined(REMAT_WITH_CUDA)
    if (device_.is_cuda()) {
      cudaEventDestroy(start_event_);
      cudaEventDestroy(stop_event_);
    }
#endif
  }
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

  void start() {
    remat::synchronize(device_);
#if defined(REMAT_WITH_CUDA)
    if (device_.is_cuda()) {
      cudaEventRecord(start_event_, stream());
      return;
    }
#endif
    start_time_ = std::chrono::steady_clock::now();
  }
  // Milliseconds since start(); waits for the device.
  double stop() {
#if defined(REMAT_WITH_CUDA)
    if (device_.is_cuda()) {
      cudaEventRecord(stop_event_, stream());
      cudaEventSynchronize(stop_event_);
      float ms = 0;
      cudaEventElapsedTime(&ms, start_event_, stop_event_);
      return ms;
    }
#endif
    remat::synchronize(device_);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_time_)
        .count();
  }

 private:
  remat::Device device_;
  std::chrono::steady_clock::time_point start_time_;
#if defined(REMAT_WITH_CUDA)
  cudaStream_t stream() const {
    return static_cast<cudaStream_t>(remat::current_stream(device_).handle());
  }
  cudaEvent_t start_event_ = nullptr;
  cudaEvent_t stop_event_ = nullptr;
#endif
};

struct Options {
  std::string preset;
  ModelConfig model;
  std::vector<int64_t> depths = {16}, batches = {4}, seqs = {256};
  std::string plans = "none,block,selective,sqrt,every-2,nested";
  std::vector<double> budgets;          // fractions of plan none's activation bytes
  std::vector<double> offload_budgets;  // likewise, for budget-offload plans
  std::vector<double> limits;           // likewise, for runs under a BudgetGuard
  std::string memory_limit;             // a BudgetGuard of this size for every run
  std::string dtype;
  std::string device = "cpu";
  int64_t warmup = 2;
  int64_t steps = 3;
  uint64_t seed = 0;
  std::string json_path = "bench_checkpoint.json";
  std::string csv_path = "bench_checkpoint.csv";
  std::string timeline_path;
  std::string state_dir;
  bool ddp = false;
  int zero_stage = 0;  // 0: none
  bool bucket_views = false;
};

// One rank's numbers for a run under --ddp.
struct RankResult {
  double median_step_ms = 0;
  int64_t peak_allocated = 0;
  int64_t optimizer_state_bytes = 0;
  double wait_ms_per_step = 0;  // backward waiting for all-reduces at its end
};

struct RunResult {
  std::string plan;
  std::vector<double> step_ms;
  double median_step_ms = 0;
  int64_t state_bytes = 0;
  int64_t peak_allocated = 0;
  int64_t peak_reserved = 0;
  int64_t replayed_ops = 0;
  double raw_allocs_per_step = 0;
  double first_loss = 0;
  std::optional<int64_t> predicted;
  std::optional<int64_t> budget_bytes;    // a budget run's budget (state bytes included)
  std::optional<double> budget_fraction;  // ... as a fraction of plan none's activations
  std::optional<int64_t> limit_bytes;     // the BudgetGuard's limit, if the run had one
  std::optional<double> limit_fraction;   // ... as a fraction of plan none's activations
  double evictions_per_step = 0;
  double regenerated_bytes_per_step = 0;
  double offloaded_bytes_per_step = 0;  // copied to the offload pool (offload plans)
  std::string skipped;                  // why a budget or limit run did not run: below its minimum
  std::vector<remat::memory::Event> timeline;
  std::vector<RankResult> ranks;  // under --ddp, by rank
  int64_t activation_bytes() const { return peak_allocated - state_bytes; }
};

RunResult measure(const Options& o, const ModelConfig& config, remat::DType dtype,
                  remat::Device device, const std::string& plan_name,
                  std::optional<int64_t> limit = std::nullopt) {
  const Plan plan = Plan::parse(plan_name, config.model);
  remat::memory::empty_cache(device);
  bench::Workload workload(config, dtype, device, o.seed);
  if (o.ddp) workload.distribute(o.zero_stage, o.bucket_views);
  if (!limit && !o.memory_limit.empty()) limit = remat::parse_bytes(o.memory_limit);
  std::optional<remat::BudgetGuard> guard;
  if (limit) guard.emplace(device, *limit);
  if (!o.state_dir.empty()) {
    std::string name = config.weights_key();
    std::replace(name.begin(), name.end(), ' ', '_');
    std::replace(name.begin(), name.end(), '=', '_');
    std::filesystem::create_directories(o.state_dir);
    workload.save_state((std::filesystem::path(o.state_dir) / (name + ".safetensors")).string());
  }
  RunResult r{plan_name};
  r.limit_bytes = limit;
  r.predicted = bench::predicted_activation_bytes(config, dtype, plan);
  StepTimer timer(device);
  remat::memory::Stats at_warm{};
  int64_t offloaded_at_warm = 0;
  int64_t wait_ns_at_warm = 0;
  for (int64_t step = 0; step < o.warmup + o.steps; ++step) {
    const bool timed = step >= o.warmup;
    if (step == o.warmup) {
      at_warm = remat::memory::stats(device);
      offloaded_at_warm = remat::memory::offload_stats(device).bytes_to_host;
      if (o.ddp) wait_ns_at_warm = workload.ddp_stats()->wait_ns;
    }
    const int64_t before = remat::memory::stats(device).allocated_bytes.current;
    remat::memory::reset_peak_stats(device);
    remat::reset_checkpoint_stats();
    timer.start();
    const remat::Tensor loss = workload.step(plan);
    const double ms = timer.stop();
    if (step == 0) r.first_loss = loss.to(remat::kFloat64).to(remat::kCPU).item<double>();
    if (!timed) continue;
    r.step_ms.push_back(ms);
    const remat::memory::Stats stats = remat::memory::stats(device);
    r.state_bytes = before;
    r.peak_allocated = std::max(r.peak_allocated, stats.allocated_bytes.peak);
    r.peak_reserved = std::max(r.peak_reserved, stats.reserved_bytes.peak);
    r.replayed_ops = remat::checkpoint_stats().ops_replayed;
  }
  const remat::memory::Stats at_end = remat::memory::stats(device);
  const auto per_step = [&](int64_t total) {
    return static_cast<double>(total) / static_cast<double>(o.steps);
  };
  r.raw_allocs_per_step = per_step(at_end.num_raw_allocs - at_warm.num_raw_allocs);
  r.evictions_per_step = per_step(at_end.num_evictions - at_warm.num_evictions);
  r.regenerated_bytes_per_step = per_step(at_end.regenerated_bytes - at_warm.regenerated_bytes);
  r.offloaded_bytes_per_step =
      per_step(remat::memory::offload_stats(device).bytes_to_host - offloaded_at_warm);
  r.median_step_ms = bench::median(r.step_ms);
  if (o.ddp) {
    auto& group = remat::distributed::ProcessGroup::world();
    const std::vector<double> all =
        group
            .all_gather(remat::from_vector(
                std::vector<double>{
                    r.median_step_ms, static_cast<double>(r.peak_allocated),
                    static_cast<double>(workload.optimizer_state_bytes()),
                    per_step(workload.ddp_stats()->wait_ns - wait_ns_at_warm) / 1e6},
                {4}))
            .to_vector<double>();
    for (size_t k = 0; k < all.size(); k += 4) {
      r.ranks.push_back(
          {all[k], static_cast<int64_t>(all[k + 1]), static_cast<int64_t>(all[k + 2]), all[k + 3]});
    }
  }
  if (!o.timeline_path.empty()) {
    // One more step, untimed: recording the timeline costs a string per event.
    remat::synchronize(device);
    remat::memory::enable_timeline(device, true);
    workload.step(plan);
    remat::synchronize(device);
    r.timeline = remat::memory::timeline(device);
    remat::memory::enable_timeline(device, false);
  }
  return r;
}

// The plans of one configuration, in the order they ran.
struct SweepResult {
  ModelConfig config;
  std::vector<RunResult> runs;

  // Step time and activation bytes against plan "none" of this configuration,
  // where it has run.
  const RunResult* none() const {
    const auto it = std::find_if(runs.begin(), runs.end(),
                                 [](const RunResult& run) { return run.plan == "none"; });
    return it == runs.end() ? nullptr : &*it;
  }

  std::pair<std::optional<double>, std::optional<double>> ratios(const RunResult& r) const {
    const RunResult* none = this->none();
    if (none == nullptr) return {};
    return {
        r.median_step_ms / none->median_step_ms,
        static_cast<double>(r.activation_bytes()) / static_cast<double>(none->activation_bytes())};
  }
};

// The value of /proc/cpuinfo's first `key` line (the first CPU's), without
// the blank after the colon; empty where there is none.
std::string cpuinfo_field(const char* key) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.starts_with(key)) {
      const size_t colon = line.find(':');
      if (colon == std::string::npos) return {};
      const size_t value = line.find_first_not_of(" \t", colon + 1);
      return value == std::string::npos ? std::string() : line.substr(value);
    }
  }
  return {};
}

std::string device_name(remat::Device device) {
#if defined(REMAT_WITH_CUDA)
  if (device.is_cuda()) {
    cudaDeviceProp properties{};
    cudaGetDeviceProperties(&properties, device.index);
    return properties.name;
  }
#endif
  const std::string model = cpuinfo_field("model name");
  return model.empty() ? device.str() : model;
}

// The vector features of this CPU that pick remat's kernels (the AVX2 or
// AVX-512 clones, AMX for bfloat16 products), as /proc/cpuinfo names them:
// the dev machines differ from session to session, and a model name such as
// "AMD EPYC" does not say which of these ran.
std::vector<std::string> cpu_features() {
  static const char* const kFeatures[] = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"};
  std::istringstream flags(cpuinfo_field("flags"));
  const std::set<std::string> present{std::istream_iterator<std::string>(flags), {}};
  std::vector<std::string> found;
  for (const char* f : kFeatures) {
    if (present.contains(f)) found.emplace_back(f);
  }
  return found;
}

int threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

std::vector<Sweep> sweeps_of(const Options& o, std::string* dtype, std::string* preset_name) {
  if (!o.preset.empty()) {
    const auto it = presets().find(o.preset);
    if (it == presets().end()) {
      std::string names;
      for (const auto& [name, preset] : presets()) names += (names.empty() ? "" : ", ") + name;
      throw remat::Error(
          fmt::format("--preset: unknown '{}', expected one of {}", o.preset, names));
    }
    if (dtype->empty()) *dtype = it->second.dtype;
    *preset_name = o.preset;
    return it->second.sweeps;
  }
  if (dtype->empty()) *dtype = "float32";
  *preset_name = "custom";
  const std::vector<std::string> plans = bench::split_list(o.plans);
  std::vector<Sweep> sweeps;
  for (int64_t depth : o.depths) {
    for (int64_t batch : o.batches) {
      for (int64_t seq : o.model.model == "transformer" ? o.seqs : std::vector<int64_t>{0}) {
        ModelConfig c = o.model;
        c.depth = depth;
        c.batch = batch;
        if (c.model == "transformer") c.seq = seq;
        sweeps.push_back({c, plans});
      }
    }
  }
  return sweeps;
}

template <typename T>
nlohmann::json optional_json(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  CLI::App app(
      "bench_checkpoint: peak memory and step time of the MLP, ResNet and transformer per "
      "checkpoint plan",
      "bench_checkpoint");
  std::string preset_help = "a named experiment (overrides the model flags):";
  for (const auto& [name, preset] : presets()) {
    preset_help += fmt::format("\n  {}: {} ({})", name, preset.description, preset.dtype);
  }
  app.add_option("--preset", o.preset, preset_help);
  bench::add_model_flags(app, o.model);
  app.add_option("--depth", o.depths, "blocks (a comma list sweeps)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--batch", o.batches, "samples per step (a comma list sweeps)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--seq", o.seqs, "transformer: tokens per sample (a comma list sweeps)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--plans", o.plans,
                 "comma-separated plans: none, block, every-N, alternate, sqrt, selective, "
                 "nested, offload, offload-inputs, compress-bf16, compress-int8, compress-fp8, "
                 "budget:SIZE, budget-offload:SIZE (docs/checkpointing.md); transformer also "
                 "attn, mlp, attn+mlp")
      ->capture_default_str();
  app.add_option("--budgets", o.budgets,
                 "after the plans, budget plans for these fractions of plan none's activation "
                 "bytes (e.g. 0.3,0.5,0.7: budget = state bytes + fraction x none's activations; "
                 "runs none first if --plans lacks it)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--offload-budgets", o.offload_budgets,
                 "after the budgets, budget-offload plans (the planner also offloading blocks) "
                 "for these fractions, as for --budgets")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--limits", o.limits,
                 "after the budgets, plan none under a hard memory limit (BudgetGuard, the "
                 "eviction mode) for these fractions of plan none's activation bytes (limit = "
                 "state bytes + fraction x none's activations, as for --budgets; the limit caps "
                 "reserved bytes, a budget allocated ones)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--memory-limit", o.memory_limit,
                 "run every plan under a hard memory limit of SIZE (e.g. 512MiB; BudgetGuard)");
  app.add_option("--dtype", o.dtype, "float32 or bfloat16 (default: the preset's, else float32)");
  app.add_option("--device", o.device, "cpu or cuda")->capture_default_str();
  app.add_option(
         "--warmup", o.warmup,
         "untimed steps per run (the second step is the first with gradients to accumulate into)")
      ->capture_default_str();
  app.add_option("--steps", o.steps, "timed steps per run (the median is reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the weights and input")->capture_default_str();
  app.add_option("--json", o.json_path, "JSON output")->capture_default_str();
  app.add_option("--csv", o.csv_path, "CSV output")->capture_default_str();
  app.add_option("--timeline", o.timeline_path,
                 "CSV of the allocator events of one extra step per run (for the plots)");
  app.add_option("--save-state", o.state_dir,
                 "directory to write each configuration's weights and input to (safetensors), "
                 "for benchmarks/pytorch/bench_checkpoint.py --state-dir");
  app.add_flag("--ddp", o.ddp,
               "under mpirun: average gradients across the processes (DistributedDataParallel), "
               "each training its own batch; rank 0 reports every rank's step time and memory");
  app.add_flag("--zero{1}", o.zero_stage,
               "with --ddp: shard AdamW's state across the ranks (ZeRO-1); --zero=2 shards the "
               "gradients too (ZeRO-2: each mean is reduced to its owner only)")
      ->check(CLI::Range(1, 2));
  app.add_flag("--bucket-views", o.bucket_views,
               "with --ddp: gradients as views into the all-reduce buckets "
               "(DdpOptions::gradient_as_bucket_view)");
  CLI11_PARSE(app, argc, argv);
  if (o.bucket_views && !o.ddp) throw remat::Error("--bucket-views needs --ddp");
  if (o.zero_stage > 0 && !o.ddp) throw remat::Error("--zero needs --ddp");
  int world_size = 1;
  if (o.ddp) {
    auto& group = remat::distributed::ProcessGroup::world();
    world_size = group.size();
    if (group.rank() != 0) {  // rank 0 reports for all
      if (std::freopen("/dev/null", "w", stdout) == nullptr) throw remat::Error("no /dev/null");
      o.json_path = o.csv_path = "/dev/null";
      o.timeline_path.clear();
      o.state_dir.clear();
    }
  }

  const remat::Device device = bench::parse_device(o.device);
  std::string dtype_name = o.dtype, preset_name;
  const std::vector<Sweep> sweeps = sweeps_of(o, &dtype_name, &preset_name);
  const remat::DType dtype = bench::parse_dtype(dtype_name);

  std::vector<SweepResult> results;
  for (const Sweep& sweep : sweeps) {
    fmt::print("{}, {}, {}: median of {} steps after {} warm-up\n", sweep.config.key(), device,
               dtype_name, o.steps, o.warmup);
    fmt::print("  {:<18} {:>10} {:>7} {:>14} {:>7} {:>11} {:>12} {:>13} {:>9} {:>8} {:>13}\n",
               "plan", "step ms", "time", "activations", "memory", "predicted", "peak alloc",
               "peak reserved", "replayed", "raw/step", "offload/step");
    SweepResult& done = results.emplace_back(SweepResult{sweep.config, {}});
    std::vector<std::string> plans = sweep.plans;
    // After the plans: runs at fractions of plan none's activations, each a
    // budget plan (its name's prefix) or plan none under a limit.
    std::vector<std::pair<std::string, double>> fractions;
    for (double f : o.budgets) fractions.emplace_back("budget", f);
    for (double f : o.offload_budgets) fractions.emplace_back("budget-offload", f);
    for (double f : o.limits) fractions.emplace_back("limit", f);
    if (!fractions.empty() && std::find(plans.begin(), plans.end(), "none") == plans.end()) {
      plans.insert(plans.begin(), "none");
    }
    for (size_t i = 0; i < plans.size() + fractions.size(); ++i) {
      RunResult run;
      if (i < plans.size()) {
        run = measure(o, sweep.config, dtype, device, plans[i]);
      } else {
        const auto& [kind, fraction] = fractions[i - plans.size()];
        const bool budget = kind != "limit";
        const RunResult& none = *done.none();  // run first: plans holds it
        const auto share =
            static_cast<int64_t>(fraction * static_cast<double>(none.activation_bytes()));
        const int64_t bytes = none.state_bytes + share;
        try {
          run = budget ? measure(o, sweep.config, dtype, device, fmt::format("{}:{}", kind, bytes))
                       : measure(o, sweep.config, dtype, device, "none", bytes);
        } catch (const remat::Error& e) {
          run.skipped = e.what();
        }
        run.plan = fmt::format("{}-{:.0f}%", kind, 100 * fraction);
        (budget ? run.budget_bytes : run.limit_bytes) = bytes;
        (budget ? run.budget_fraction : run.limit_fraction) = fraction;
      }
      done.runs.push_back(std::move(run));
      const RunResult& r = done.runs.back();
      if (!r.skipped.empty()) {
        fmt::print("  {:<18} not run: {}\n", r.plan, r.skipped);
        continue;
      }
      const auto [time_ratio, memory_ratio] = done.ratios(r);
      fmt::print(
          "  {:<18} {:>10.1f} {:>7} {:>10.1f} MiB {:>7} {:>11} {:>8.1f} MiB "
          "{:>9.1f} MiB {:>9} {:>8.1f} {:>9.1f} MiB\n",
          r.plan, r.median_step_ms, time_ratio ? fmt::format("{:.2f}x", *time_ratio) : "-",
          mib(r.activation_bytes()),
          memory_ratio ? fmt::format("{:.1f}%", 100 * *memory_ratio) : "-",
          r.predicted ? fmt::format("{:.1f} MiB", mib(*r.predicted)) : "-", mib(r.peak_allocated),
          mib(r.peak_reserved), r.replayed_ops, r.raw_allocs_per_step,
          mib(static_cast<int64_t>(r.offloaded_bytes_per_step)));
      for (size_t k = 0; k < r.ranks.size(); ++k) {
        fmt::print(
            "  {:<18} rank {}: {:.1f} ms ({:.1f} ms waiting for all-reduces at the end of "
            "backward), peak {:.1f} MiB, AdamW state {:.1f} MiB\n",
            "", k, r.ranks[k].median_step_ms, r.ranks[k].wait_ms_per_step,
            mib(r.ranks[k].peak_allocated), mib(r.ranks[k].optimizer_state_bytes));
      }
      if (r.budget_bytes && r.peak_allocated > *r.budget_bytes) {
        fmt::print("  {:<18} over its budget of {:.1f} MiB\n", r.plan, mib(*r.budget_bytes));
      }
      if (r.limit_bytes) {
        fmt::print(
            "  {:<18} limit {:.1f} MiB: {:.1f} evictions and {:.1f} MiB regenerated per "
            "step{}\n",
            r.plan, mib(*r.limit_bytes), r.evictions_per_step,
            mib(static_cast<int64_t>(r.regenerated_bytes_per_step)),
            r.peak_reserved > *r.limit_bytes ? ", OVER THE LIMIT" : "");
      }
    }
  }

  nlohmann::ordered_json json = {{"tool", "remat"},
                                 {"tool_version", "0.1.0"},
                                 {"device", device.str()},
                                 {"device_name", device_name(device)},
                                 {"cpu_features", cpu_features()},
                                 {"threads", threads()},
                                 {"dtype", dtype_name},
                                 {"preset", preset_name},
                                 {"warmup", o.warmup},
                                 {"steps", o.steps},
                                 {"world_size", world_size},
                                 {"zero_stage", o.zero_stage},
                                 {"bucket_views", o.bucket_views},
                                 {"runs", nlohmann::json::array()}};
  std::ofstream csv(o.csv_path);
  csv << "key,plan,median_step_ms,time_ratio,state_bytes,peak_allocated_bytes,activation_bytes,"
         "memory_ratio,peak_reserved_bytes,replayed_ops,raw_allocs_per_step,"
         "predicted_activation_bytes,first_loss,offloaded_bytes_per_step\n";
  std::ofstream timeline;
  if (!o.timeline_path.empty()) {
    timeline.open(o.timeline_path);
    timeline << "key,plan,index,time_us,kind,bytes,allocated_after,reserved_after,tag\n";
  }
  for (const SweepResult& sweep : results) {
    const std::string key = sweep.config.key();
    for (const RunResult& r : sweep.runs) {
      const nlohmann::ordered_json sizes = {{"budget_bytes", optional_json(r.budget_bytes)},
                                            {"budget_fraction", optional_json(r.budget_fraction)},
                                            {"limit_bytes", optional_json(r.limit_bytes)},
                                            {"limit_fraction", optional_json(r.limit_fraction)}};
      if (!r.skipped.empty()) {  // in the JSON only, as benchmarks/pytorch writes skipped runs
        nlohmann::ordered_json skipped = {{"model", sweep.config.model},
                                          {"config", sweep.config.to_json()},
                                          {"key", key},
                                          {"plan", r.plan},
                                          {"skipped", r.skipped}};
        skipped.update(sizes);
        json["runs"].push_back(std::move(skipped));
        continue;
      }
      const auto [time_ratio, memory_ratio] = sweep.ratios(r);
      json["runs"].push_back({{"model", sweep.config.model},
                              {"config", sweep.config.to_json()},
                              {"key", key},
                              {"plan", r.plan},
                              {"step_ms", r.step_ms},
                              {"median_step_ms", r.median_step_ms},
                              {"time_ratio", optional_json(time_ratio)},
                              {"state_bytes", r.state_bytes},
                              {"peak_allocated_bytes", r.peak_allocated},
                              {"activation_bytes", r.activation_bytes()},
                              {"memory_ratio", optional_json(memory_ratio)},
                              {"peak_reserved_bytes", r.peak_reserved},
                              {"replayed_ops", r.replayed_ops},
                              {"raw_allocs_per_step", r.raw_allocs_per_step},
                              {"first_loss", r.first_loss},
                              {"predicted_activation_bytes", optional_json(r.predicted)},
                              {"evictions_per_step", r.evictions_per_step},
                              {"regenerated_bytes_per_step", r.regenerated_bytes_per_step},
                              {"offloaded_bytes_per_step", r.offloaded_bytes_per_step}});
      json["runs"].back().update(sizes);
      if (!r.ranks.empty()) {
        nlohmann::json ranks = nlohmann::json::array();
        for (const RankResult& k : r.ranks) {
          ranks.push_back({{"median_step_ms", k.median_step_ms},
                           {"peak_allocated_bytes", k.peak_allocated},
                           {"optimizer_state_bytes", k.optimizer_state_bytes},
                           {"allreduce_wait_ms_per_step", k.wait_ms_per_step}});
        }
        json["runs"].back()["ranks"] = std::move(ranks);
      }
      csv << fmt::format("\"{}\",{},{:.3f},{},{},{},{},{},{},{},{},{},{:.8g},{:.0f}\n", key, r.plan,
                         r.median_step_ms, time_ratio ? fmt::format("{:.4f}", *time_ratio) : "",
                         r.state_bytes, r.peak_allocated, r.activation_bytes(),
                         memory_ratio ? fmt::format("{:.4f}", *memory_ratio) : "", r.peak_reserved,
                         r.replayed_ops, r.raw_allocs_per_step,
                         r.predicted ? std::to_string(*r.predicted) : "", r.first_loss,
                         r.offloaded_bytes_per_step);
      for (size_t i = 0; i < r.timeline.size(); ++i) {
        const remat::memory::Event& e = r.timeline[i];
        timeline << fmt::format("\"{}\",{},{},{:.3f},{},{},{},{},{}\n", key, r.plan, i,
                                static_cast<double>(e.time_ns) / 1e3,
                                remat::memory::event_kind_name(e.kind), e.bytes, e.allocated_after,
                                e.reserved_after, e.tag);
      }
    }
  }
  std::ofstream(o.json_path) << json.dump(2) << '\n';
  fmt::print("wrote {} and {}{}\n", o.json_path, o.csv_path,
             o.timeline_path.empty() ? "" : " and " + o.timeline_path);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "bench_checkpoint: {}\n", e.what());
  return 1;
}
