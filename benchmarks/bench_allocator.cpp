// bench_allocator: remat's caching allocator against the raw backend under it
// (std::aligned_alloc on the CPU, as src/memory/cpu_backend.cpp calls it;
// cudaMalloc on CUDA) on the allocation trace of a real training step
// (docs/memory.md). For each plan it builds a benchmark model, runs warm-up
// steps (the optimizer state is created, the cache fills), records one more
// step with the allocator timeline, keeps its Alloc and Free events (a Free
// paired with the live Alloc at its address), then frees the model and the
// cache and replays the trace `repeats` times through each allocator.
// Reports the time per allocation and its free (median of the replays after
// the first, which fills the cache, and that first one), the bytes the trace
// has live at its peak (the step's own blocks: parameters, gradients and
// optimizer state, allocated before it, are not in the trace), the caching
// allocator's peak reserved bytes and their ratio to that peak, and the raw
// allocations per step once the cache is warm.
//
// Both allocators are asked for what the tensors asked for (the events'
// `requested` bytes), so reserved/peak includes the caching allocator's
// rounding and the slack of unsplit blocks.
//
// The replay touches none of the memory: it measures the allocators, not page
// faults. That flatters the raw side on the CPU. glibc malloc serves a block
// above M_MMAP_THRESHOLD (128 KiB at first; freeing such a block raises it to
// that size, up to 32 MiB) with a fresh mmap and the others from its heap,
// which it grows with brk and trims when its top is freed. Those system calls
// are in the raw timing; the page faults on the first touch of the fresh
// pages they hand out are not, though a real step would pay them every step,
// where the caching allocator's segments stay mapped and faulted in.
//
//   bench_allocator --model transformer --depth 4 --seq 128 --width 128 --plans none,block
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#if defined(REMAT_WITH_CUDA)
#include <cuda_runtime.h>
#endif

#include "common/flags.h"
#include "common/median.h"

namespace {

using bench::mib;
using remat::memory::EventKind;

struct Options {
  bench::ModelConfig model;
  std::string plans = "none";
  std::string dtype = "float32";
  std::string device = "cpu";
  int64_t warmup = 2;
  int64_t repeats = 50;
  uint64_t seed = 0;
  std::string json_path = "bench_allocator.json";
};

// One allocator call: allocate block `id` (bytes[id]) or free it.
struct Op {
  int32_t id;
  bool alloc;
};

struct Trace {
  std::vector<int64_t> bytes;  // per block id
  std::vector<Op> ops;
  int64_t events = 0;             // timeline events, segment events included
  int64_t frees_from_before = 0;  // frees of blocks allocated before the step: not replayed
  int64_t left_allocated = 0;     // blocks the step kept: the replay frees them at its end
  int64_t peak_allocated = 0;     // most bytes live at once
};

Trace record(const Options& o, const std::string& plan_name, remat::DType dtype,
             remat::Device device) {
  const bench::Plan plan = bench::Plan::parse(plan_name, o.model.model);
  std::vector<remat::memory::Event> events;
  {
    bench::Workload workload(o.model, dtype, device, o.seed);
    for (int64_t step = 0; step < o.warmup; ++step) workload.step(plan);
    remat::synchronize(device);
    remat::memory::enable_timeline(device, true);
    workload.step(plan);
    remat::synchronize(device);
    events = remat::memory::timeline(device);
    remat::memory::enable_timeline(device, false);
  }
  remat::memory::empty_cache(device);

  Trace t;
  t.events = static_cast<int64_t>(events.size());
  std::unordered_map<uintptr_t, int32_t> live;  // address -> block id
  int64_t live_bytes = 0;
  for (const remat::memory::Event& e : events) {
    if (e.kind == EventKind::Alloc) {
      const auto id = static_cast<int32_t>(t.bytes.size());
      t.bytes.push_back(e.requested);
      live[e.address] = id;
      t.ops.push_back({id, true});
      live_bytes += e.requested;
      t.peak_allocated = std::max(t.peak_allocated, live_bytes);
    } else if (e.kind == EventKind::Free) {
      const auto it = live.find(e.address);
      if (it == live.end()) {
        ++t.frees_from_before;
        continue;
      }
      t.ops.push_back({it->second, false});
      live_bytes -= t.bytes[it->second];
      live.erase(it);
    }
  }
  t.left_allocated = static_cast<int64_t>(live.size());
  for (const auto& [address, id] : live) t.ops.push_back({id, false});
  return t;
}

struct Result {
  std::string allocator;
  std::vector<double> ns_per_pair;  // per replay
  int64_t peak_reserved = 0;        // 0: unknown (the raw backends' own overhead is out of sight)
  double raw_allocs_per_step = 0;

  // Of the replays after the first, which fills the cache.
  double median_ns_per_pair() const {
    return bench::median({ns_per_pair.begin() + 1, ns_per_pair.end()});
  }
};

// Replays the trace `replays` times, appending each replay's nanoseconds per
// allocation (with its free) to r.
template <class Alloc, class Free>
void replay(const Trace& t, int64_t replays, Result& r, Alloc&& alloc, Free&& release) {
  for (int64_t i = 0; i < replays; ++i) {
    const auto start = std::chrono::steady_clock::now();
    for (const Op& op : t.ops) op.alloc ? alloc(op.id, t.bytes[op.id]) : release(op.id);
    const std::chrono::duration<double, std::nano> elapsed =
        std::chrono::steady_clock::now() - start;
    r.ns_per_pair.push_back(elapsed.count() / static_cast<double>(t.bytes.size()));
  }
}

Result replay_caching(const Trace& t, int64_t repeats, remat::Device device) {
  Result r{"caching"};
  std::vector<remat::memory::Allocation> slots(t.bytes.size());
  const auto alloc = [&](int32_t id, int64_t bytes) {
    slots[id] = remat::memory::allocate(device, bytes);
  };
  const auto release = [&](int32_t id) { slots[id] = remat::memory::Allocation(); };
  remat::memory::reset_peak_stats(device);
  replay(t, 1, r, alloc, release);  // fills the cache
  const int64_t raw_before = remat::memory::stats(device).num_raw_allocs;
  replay(t, repeats - 1, r, alloc, release);
  const remat::memory::Stats stats = remat::memory::stats(device);
  r.peak_reserved = stats.reserved_bytes.peak;
  r.raw_allocs_per_step =
      static_cast<double>(stats.num_raw_allocs - raw_before) / static_cast<double>(repeats - 1);
  remat::memory::empty_cache(device);
  return r;
}

Result replay_raw(const Trace& t, int64_t repeats, remat::Device device) {
  Result r{device.is_cuda() ? "cudaMalloc" : "aligned_alloc"};
  r.raw_allocs_per_step = static_cast<double>(t.bytes.size());  // each allocation is one
  std::vector<void*> slots(t.bytes.size());
#if defined(REMAT_WITH_CUDA)
  if (device.is_cuda()) {
    replay(
        t, repeats, r,
        [&](int32_t id, int64_t bytes) {
          const cudaError_t status = cudaMalloc(&slots[id], static_cast<size_t>(bytes));
          REMAT_CHECK(status == cudaSuccess, "cudaMalloc({}): {}", bytes,
                      cudaGetErrorString(status));
        },
        [&](int32_t id) { cudaFree(slots[id]); });
    return r;
  }
#endif
  replay(
      t, repeats, r,
      [&](int32_t id, int64_t bytes) {
        constexpr int64_t kAlignment = 64;  // src/memory/cpu_backend.cpp's
        const int64_t padded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
        slots[id] = std::aligned_alloc(kAlignment, static_cast<size_t>(padded));
        REMAT_CHECK(slots[id] != nullptr, "aligned_alloc({}) failed", padded);
      },
      [&](int32_t id) { std::free(slots[id]); });
  return r;
}

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  CLI::App app(
      "bench_allocator: the caching allocator against the raw backend on a training step's "
      "allocation trace",
      "bench_allocator");
  bench::add_model_flags(app, o.model);
  app.add_option("--depth", o.model.depth, "blocks")->capture_default_str();
  app.add_option("--batch", o.model.batch, "samples per step")->capture_default_str();
  app.add_option("--seq", o.model.seq, "transformer: tokens per sample")->capture_default_str();
  app.add_option("--plans", o.plans,
                 "comma-separated checkpoint plans, one trace each (none and block are the "
                 "interesting pair)")
      ->capture_default_str();
  app.add_option("--dtype", o.dtype, "float32 or bfloat16")->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda")->capture_default_str();
  app.add_option("--warmup", o.warmup, "training steps before the recorded one")
      ->capture_default_str();
  app.add_option("--repeats", o.repeats, "replays of the trace per allocator (at least 2)")
      ->check(CLI::Range(int64_t{2}, int64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the weights and input")->capture_default_str();
  app.add_option("--json", o.json_path, "JSON output")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const remat::Device device = bench::parse_device(o.device);
  const remat::DType dtype = bench::parse_dtype(o.dtype);

  nlohmann::ordered_json json = {{"tool", "remat"},      {"device", device.str()},
                                 {"dtype", o.dtype},     {"warmup", o.warmup},
                                 {"repeats", o.repeats}, {"runs", nlohmann::json::array()}};
  for (const std::string& plan : bench::split_list(o.plans)) {
    const Trace t = record(o, plan, dtype, device);
    fmt::print(
        "{}, plan {}, {}, {}: {} events, {} allocations ({} frees of older blocks skipped, {} "
        "left allocated), peak {:.1f} MiB; {} replays\n",
        o.model.key(), plan, device, o.dtype, t.events, t.bytes.size(), t.frees_from_before,
        t.left_allocated, mib(t.peak_allocated), o.repeats);
    fmt::print("  {:<14} {:>10} {:>14} {:>11} {:>14} {:>15} {:>10}\n", "allocator", "ns/alloc",
               "first replay", "M allocs/s", "peak reserved", "reserved/peak", "raw/step");
    nlohmann::ordered_json allocators = nlohmann::json::array();
    for (const Result& r :
         {replay_caching(t, o.repeats, device), replay_raw(t, o.repeats, device)}) {
      const bool reserved_known = r.peak_reserved > 0;
      const double ratio =
          static_cast<double>(r.peak_reserved) / static_cast<double>(t.peak_allocated);
      fmt::print("  {:<14} {:>10.1f} {:>14.1f} {:>11.2f} {:>14} {:>15} {:>10.1f}\n", r.allocator,
                 r.median_ns_per_pair(), r.ns_per_pair.front(), 1e3 / r.median_ns_per_pair(),
                 reserved_known ? fmt::format("{:.1f} MiB", mib(r.peak_reserved)) : "-",
                 reserved_known ? fmt::format("{:.3f}", ratio) : "-", r.raw_allocs_per_step);
      allocators.push_back({{"allocator", r.allocator},
                            {"median_ns_per_alloc", r.median_ns_per_pair()},
                            {"first_replay_ns_per_alloc", r.ns_per_pair.front()},
                            {"allocs_per_second", 1e9 / r.median_ns_per_pair()},
                            {"peak_reserved_bytes", reserved_known ? nlohmann::json(r.peak_reserved)
                                                                   : nlohmann::json(nullptr)},
                            {"reserved_over_peak_allocated",
                             reserved_known ? nlohmann::json(ratio) : nlohmann::json(nullptr)},
                            {"raw_allocs_per_step", r.raw_allocs_per_step},
                            {"ns_per_alloc", r.ns_per_pair}});
    }
    json["runs"].push_back({{"model", o.model.model},
                            {"config", o.model.to_json()},
                            {"key", o.model.key()},
                            {"plan", plan},
                            {"events", t.events},
                            {"allocations", t.bytes.size()},
                            {"frees_of_older_blocks", t.frees_from_before},
                            {"left_allocated", t.left_allocated},
                            {"peak_allocated_bytes", t.peak_allocated},
                            {"allocators", allocators}});
  }
  std::ofstream(o.json_path) << json.dump(2) << '\n';
  fmt::print("wrote {}\n", o.json_path);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "bench_allocator: {}\n", e.what());
  return 1;
}
