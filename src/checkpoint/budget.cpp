// Checkpointing under a memory budget: the per-block profile, the memory
// estimator of a schedule, and the planner that finds the schedule with the
// least recompute (and offload copying) that fits (docs/checkpointing.md,
// "Planning for a budget").
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <unordered_set>
#include <utility>

#include "autograd/node.h"
#include "checkpoint/budget.h"
#include "checkpoint/pack.h"
#include "memory/offload.h"
#include "ops/registry.h"
#include "remat/autograd.h"
#include "remat/checkpoint.h"
#include "remat/core/generator.h"
#include "remat/core/grad_mode.h"
#include "remat/memory/memory.h"

namespace remat {
namespace {

using Block = std::function<Tensor(const Tensor&)>;
using Item = CheckpointSchedule::Item;

int64_t allocated_now(Device d) { return memory::stats(d).allocated_bytes.current; }

// The tape entries of one block's graph: everything reachable from its
// output (its input is a leaf, so the walk stops at the block's start).
std::vector<const autograd::Node*> entries_of(const Tensor& y) {
  std::vector<const autograd::Node*> out;
  std::unordered_set<const autograd::Node*> seen;
  std::vector<const autograd::Node*> stack;
  if (y.impl().grad_fn) stack.push_back(y.impl().grad_fn.get());
  while (!stack.empty()) {
    const autograd::Node* node = stack.back();
    stack.pop_back();
    if (!seen.insert(node).second) continue;
    out.push_back(node);
    for (const autograd::NodeInput& in : node->inputs) {
      if (in.edge.producer) stack.push_back(in.edge.producer.get());
    }
  }
  return out;
}

// The storages the entries keep for backward.
std::unordered_set<const Storage*> saved_storages(const std::vector<const autograd::Node*>& nodes) {
  std::unordered_set<const Storage*> out;
  auto add = [&](const std::optional<autograd::SavedTensor>& s) {
    if (s && s->value.defined()) out.insert(s->value.impl().storage.get());
  };
  for (const autograd::Node* node : nodes) {
    for (const autograd::NodeInput& in : node->inputs) add(in.saved);
    for (const autograd::NodeOutput& o : node->outputs) add(o.saved);
  }
  return out;
}

// Swaps the .grad of the block's parameters for zeros for the length of the
// profile's backward, so it accumulates as a later training step does (into
// existing gradients) and leaves the real ones untouched.
class StashedGrads {
 public:
  explicit StashedGrads(const std::vector<const autograd::Node*>& nodes, const Tensor& input) {
    std::unordered_set<TensorImpl*> seen;
    for (const autograd::Node* node : nodes) {
      for (const autograd::NodeInput& in : node->inputs) {
        std::shared_ptr<TensorImpl> leaf = in.edge.leaf.lock();
        if (!leaf || leaf.get() == input.impl_ptr().get() || !seen.insert(leaf.get()).second) {
          continue;
        }
        Tensor zeros = zeros_like(Tensor(leaf).detach());
        stashed_.emplace_back(leaf, leaf->grad);
        leaf->grad = zeros.impl_ptr();
      }
    }
  }
  ~StashedGrads() {
    for (auto& [leaf, grad] : stashed_) leaf->grad = std::move(grad);
  }
  StashedGrads(const StashedGrads&) = delete;
  StashedGrads& operator=(const StashedGrads&) = delete;

 private:
  std::vector<std::pair<std::shared_ptr<TensorImpl>, std::shared_ptr<TensorImpl>>> stashed_;
};

double milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// What a block's forward left alive above `before`, its output's own storage aside.
int64_t kept_besides_output(int64_t before, const Tensor& input, const Tensor& y) {
  const int64_t new_output =
      y.impl().storage == input.impl().storage ? 0 : y.impl().storage->data.size();
  return std::max<int64_t>(0, allocated_now(y.device()) - before - new_output);
}

struct BackwardRun {
  int64_t peak = 0;  // above the live set at its start
  double ms = 0;
};

// The block's backward with its parameters' gradients stashed. Seeded with a
// gradient held through the backward: in a training step that makes the
// estimate up to two block outputs high (a loss's gradient dies once used),
// but seeded as a loss the profile misses what a replayed segment holds
// besides (docs/checkpointing.md).
BackwardRun run_block_backward(const std::vector<const autograd::Node*>& nodes, const Tensor& input,
                               const Tensor& y, memory::PeakWatch& watch) {
  StashedGrads stash(nodes, input);
  watch.restart();
  const int64_t start_bytes = allocated_now(y.device());
  const auto start = std::chrono::steady_clock::now();
  backward(y, ones_like(y));
  synchronize(y.device());
  return {watch.peak() - start_bytes, milliseconds_since(start)};
}

// The block alone in a segment keeping its matmul outputs, from `input`.
BlockProfile::Selective profile_selective(const Block& block, const Tensor& input,
                                          double plain_backward_ms) {
  const Device d = input.device();
  Tensor h = input.detach();
  h.requires_grad_();
  CheckpointOptions opts;
  opts.policy = checkpointing::keep_matmuls_policy();
  synchronize(d);
  memory::PeakWatch watch(d);
  const int64_t before = allocated_now(d);
  Tensor y = checkpoint(block, h, opts);
  BlockProfile::Selective s;
  s.kept_bytes = kept_besides_output(before, h, y);
  const BackwardRun run = run_block_backward(entries_of(y), h, y, watch);
  s.backward_peak = run.peak;
  s.recompute_ms = std::max(0.0, run.ms - plain_backward_ms);
  return s;
}

BlockProfile profile_one(const Block& block, Tensor& current) {
  const Device d = current.device();
  BlockProfile p;
  Tensor h = current.detach();
  h.requires_grad_();  // a leaf: its .grad is the block's input gradient
  current = Tensor();
  p.input_bytes = h.nbytes();

  synchronize(d);
  memory::PeakWatch watch(d);  // the caller's peak statistics are left alone
  const int64_t before = allocated_now(d);
  const auto start = std::chrono::steady_clock::now();
  Tensor y = block(h);
  synchronize(d);
  p.forward_ms = milliseconds_since(start);
  p.forward_peak = watch.peak() - before;
  p.output_bytes = y.nbytes();
  REMAT_CHECK(y.requires_grad(),
              "profile_blocks: a block's output does not require grad; its parameters must");

  const std::vector<const autograd::Node*> nodes = entries_of(y);
  const std::unordered_set<const Storage*> saved = saved_storages(nodes);
  p.keeps_input = saved.count(h.impl().storage.get()) > 0;
  p.keeps_output = saved.count(y.impl().storage.get()) > 0;
  p.kept_bytes = kept_besides_output(before, h, y);

  const BackwardRun run = run_block_backward(nodes, h, y, watch);
  p.backward_peak = run.peak;
  p.selective = profile_selective(block, h, run.ms);
  current = y.detach();
  return p;
}

// A round trip of `bytes` through the device's offload pool, out and back
// and waited for, in ms per MiB: the best of three (timing noise only adds).
double offload_ms_per_mib(Device d, int64_t bytes) {
  memory::OffloadPool& pool = memory::OffloadPool::of(d);
  const memory::Allocation on_device = memory::allocate(d, bytes);
  const memory::Allocation host = pool.allocate(bytes);
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 3; ++i) {
    synchronize(d);
    const auto start = std::chrono::steady_clock::now();
    pool.copy(memory::OffloadPool::Direction::ToHost, on_device, host, bytes);
    pool.order_after(pool.copy(memory::OffloadPool::Direction::ToDevice, host, on_device, bytes));
    synchronize(d);
    best = std::min(best, milliseconds_since(start));
  }
  return best * static_cast<double>(1 << 20) / static_cast<double>(bytes);
}

// ---- the estimator ----------------------------------------------------------------

// The segments the memory model covers, by what they keep and where.
enum class SegmentModel {
  Recompute,         // keeps its input, on the device (no policy: the caller's, taken as this)
  RecomputeOffload,  // keeps its input, in the offload pool (Policy::recompute_all().offloaded())
  KeepMatmuls,       // one block keeping its matmul outputs (the selective plan)
  KeepAllPacked,     // one block keeping everything offloaded or compressed
};

SegmentModel model_of(const Item& item, bool top) {
  if (!item.policy) return SegmentModel::Recompute;
  const Policy& p = *item.policy;
  const bool alone = item.end == item.begin + 1;
  using P = Policy::Placement;
  if (p.kind() == Policy::Kind::RecomputeAll && p.placement() == P::Device) {
    return SegmentModel::Recompute;
  }
  if (p.kind() == Policy::Kind::RecomputeAll && p.placement() == P::Offload && top) {
    return SegmentModel::RecomputeOffload;
  }
  if (p == checkpointing::keep_matmuls_policy()) return SegmentModel::KeepMatmuls;
  if (p.kind() == Policy::Kind::SaveAll && alone && top) return SegmentModel::KeepAllPacked;
  throw NotImplementedError(fmt::format(
      "predicting a segment [{}, {}) under {}{}: the memory model covers segments that recompute "
      "everything (their input offloaded at the top level), keep matmul outputs, or keep "
      "everything offloaded or compressed (one block alone at the top level)",
      item.begin, item.end, p.str(), top ? "" : " inside another segment"));
}

// What stays on the device of `bytes` of `dtype` kept under `policy`: nothing
// when offloaded, what checkpoint/pack.cpp stores when compressed (the sum of
// a block's kept bytes, so storages under the packer's 4 KiB threshold,
// which stay as they are, count compressed: slightly low for small tensors).
int64_t resident_bytes(const Policy& policy, int64_t bytes, DType dtype) {
  switch (policy.placement()) {
    case Policy::Placement::Device: return bytes;
    case Policy::Placement::Offload: return 0;
    case Policy::Placement::Compress:
      return checkpointing::compressed_bytes(bytes, dtype, policy.format());
  }
  return bytes;
}

// What a segment keeping matmul outputs costs: modelled for one block alone
// at the top level, from the profile's measurement of it (inside a replayed
// segment its kept outputs are regenerated with the rest, which the
// measurement does not show).
const BlockProfile::Selective& selective_of(const StepProfile& prof, const Item& item, bool top) {
  const BlockProfile& b = prof.blocks[static_cast<size_t>(item.begin)];
  if (!top || item.end != item.begin + 1 || !b.selective) {
    throw NotImplementedError(fmt::format(
        "predicting a segment [{}, {}) keeping matmul outputs: only one block alone, outside "
        "other segments, with its profile's measurement (profile_blocks takes it), is modelled",
        item.begin, item.end));
  }
  return *b.selective;
}

// Bytes block i keeps when run plainly at a level where its input is already
// counted (`input_counted`: kept by the segment or the block before) and its
// output perhaps too (`output_counted`: the stack's result, which the caller
// holds through backward).
int64_t plain_kept(const BlockProfile& b, bool input_counted, bool output_counted) {
  return b.kept_bytes + (b.keeps_input && !input_counted ? b.input_bytes : 0) +
         (b.keeps_output && !output_counted ? b.output_bytes : 0);
}

int64_t max_forward_peak(const StepProfile& prof, int64_t begin, int64_t end) {
  int64_t peak = 0;
  for (int64_t i = begin; i < end; ++i) {
    peak = std::max(peak, prof.blocks[static_cast<size_t>(i)].forward_peak);
  }
  return peak;
}

// The peak of one level of the schedule above what is alive outside it:
// backward visits the items last to first, and while it is in item k the
// items before it hold what they kept. A plain block costs what it keeps
// plus its backward's working set (or its forward's peak, plus the gradient
// `replay_gradient` that waits while a segment's replay runs it); a segment
// costs its input (unless already counted) plus the larger of its blocks'
// forward peaks while this level runs it (with the gradient waiting on this
// level) and its own level's peak, with the gradient of its output waiting
// during its own replay.
struct LevelBytes {
  int64_t peak = 0;
  int64_t kept = 0;       // what the level's items hold when its forward is done
  int64_t offloaded = 0;  // what its items (not their children) put in the offload pool
};
LevelBytes level_bytes(const StepProfile& prof, const std::vector<Item>& items, bool input_counted,
                       int64_t replay_gradient, bool top) {
  int64_t prefix = 0, peak = 0;  // prefix: what the items so far keep
  bool counted = input_counted;
  const int64_t last = static_cast<int64_t>(prof.blocks.size()) - 1;
  // What the previous item has in the offload pool: backward brings it back
  // while it runs the item after it (one segment ahead).
  int64_t offloaded_before = 0, offloaded = 0;
  // The policy of the previous item where it packed its block's output:
  // an item packing the same way shares that storage's ghost.
  std::optional<Policy> output_packed_by;
  for (const Item& item : items) {
    const int64_t ahead = std::exchange(offloaded_before, 0);
    const std::optional<Policy> input_packed_by = std::exchange(output_packed_by, std::nullopt);
    if (!item.segment) {
      const BlockProfile& b = prof.blocks[static_cast<size_t>(item.begin)];
      const int64_t kept = plain_kept(b, counted, item.begin == last);
      peak = std::max(peak,
                      prefix + std::max(replay_gradient + b.forward_peak, kept + b.backward_peak));
      prefix += kept;
      counted = b.keeps_output;
    } else {
      const int64_t kept = counted ? 0 : prof.blocks[static_cast<size_t>(item.begin)].input_bytes;
      const int64_t out = prof.blocks[static_cast<size_t>(item.end - 1)].output_bytes;
      // Run forward by this level (keeping nothing inside), then replayed by itself.
      const int64_t passing = replay_gradient + max_forward_peak(prof, item.begin, item.end);
      // Measured: inside a replayed level, the output this level's replay
      // regenerated for a plain next item is still alive while this segment
      // replays (a segment next holds it as its input instead).
      const bool plain_next = &item != &items.back() && !(&item + 1)->segment;
      const int64_t lingering = !top && plain_next ? out : 0;
      const SegmentModel model = model_of(item, top);
      if (model == SegmentModel::KeepAllPacked) {
        // Run plainly, what it keeps packed as it is kept: on the device
        // while its forward runs, and in backward with what the segment
        // before it has offloaded coming back.
        const BlockProfile& b = prof.blocks[static_cast<size_t>(item.begin)];
        const bool input_packed = input_packed_by == item.policy;
        const int64_t full = plain_kept(b, counted || input_packed, item.begin == last);
        peak = std::max(peak, prefix + std::max(replay_gradient + b.forward_peak,
                                                full + b.backward_peak + ahead));
        prefix += resident_bytes(*item.policy, full, prof.dtype);
        if (item.policy->placement() == Policy::Placement::Offload) {
          offloaded_before = full;
          offloaded += full;
        }
        if (b.keeps_output) output_packed_by = item.policy;
        // The output's original lives on where the next item holds it (a
        // plain block keeping its input, a segment), and then on the device.
        counted = false;
        continue;
      }
      // A block alone keeping its matmul outputs holds them through the
      // rest of the forward; its backward (with the replay of the rest) was measured.
      int64_t held = 0, inside = 0;
      if (model == SegmentModel::KeepMatmuls) {
        const BlockProfile::Selective& kept_matmuls = selective_of(prof, item, top);
        held = kept_matmuls.kept_bytes;
        inside = held + kept_matmuls.backward_peak;
      } else {
        inside = level_bytes(prof, item.children, true, out, false).peak;
      }
      if (model == SegmentModel::RecomputeOffload) {
        // Its input is in the pool from its forward's end to its backward,
        // where the input of the segment before it comes back too.
        peak = std::max(peak, prefix + lingering + kept + std::max(passing, inside + ahead));
        offloaded_before = kept;
        offloaded += kept;
      } else {
        peak = std::max(peak, prefix + kept + lingering + std::max(passing, inside));
        prefix += kept;
      }
      prefix += held;
      counted = false;
    }
  }
  return {peak, prefix, offloaded};
}

double level_recompute_ms(const StepProfile& prof, const std::vector<Item>& items, bool top) {
  double ms = 0;
  for (const Item& item : items) {
    if (!item.segment) continue;
    const SegmentModel model = model_of(item, top);
    if (model == SegmentModel::KeepAllPacked) continue;  // nothing replayed
    if (model == SegmentModel::KeepMatmuls) {
      ms += selective_of(prof, item, top).recompute_ms;
      continue;
    }
    for (int64_t i = item.begin; i < item.end; ++i) {
      ms += prof.blocks[static_cast<size_t>(i)].forward_ms;
    }
    ms += level_recompute_ms(prof, item.children, false);
  }
  return ms;
}

void check_covers(const StepProfile& prof, const CheckpointSchedule& schedule) {
  schedule.validate(static_cast<int64_t>(prof.blocks.size()));
}

// ---- the planner ----------------------------------------------------------------

// The optimal schedule by dynamic programming over (first block s, end e of
// the level, memory left m in units, whether s's input is counted, whether
// the level is the top one, whether a segment may span the whole level):
// the best first item of the level is a plain block s or a segment [s, d),
// whose contents are themselves an optimal level, or at the top level block
// s alone keeping its matmul outputs or (PlanChoices::offload) offloaded,
// the state then also saying what the item before offloaded; the cost is
// recompute time plus offload copy time; what the first item keeps
// is memory the rest of the level cannot use. This is the recursion of
// level_bytes read backwards, so a schedule it accepts fits the budget in
// level_bytes's bytes (sizes are rounded up to units); it is the persistent
// checkpointing DP of Beaumont et al. ("rotor") in remat's segment model.
class Planner {
 public:
  Planner(const StepProfile& prof, int64_t budget, int resolution, const PlanChoices& choices)
      : prof_(prof),
        blocks_(static_cast<int64_t>(prof.blocks.size())),
        offload_(choices.offload && prof.offload_ms_per_mib > 0) {
    REMAT_CHECK(blocks_ < std::numeric_limits<int16_t>::max(),
                "plan_for_budget: {} blocks; the planner takes fewer than {}", blocks_,
                std::numeric_limits<int16_t>::max());
    unit_ = std::max<int64_t>(1, (budget + resolution - 1) / resolution);
    units_ = static_cast<int>(budget / unit_);
    // The top level runs on what the stack's output and what the step holds
    // during backward leave, and must end with after_forward_ units left.
    top_units_ =
        units_ - units_of(block(blocks_ - 1).output_bytes) - units_of(prof.during_backward_bytes);
    after_forward_ = units_of(prof.after_forward_bytes) - units_of(prof.during_backward_bytes);
    prefix_ms_.assign(static_cast<size_t>(blocks_) + 1, 0.0);
    for (int64_t i = 0; i < blocks_; ++i) {
      prefix_ms_[static_cast<size_t>(i) + 1] =
          prefix_ms_[static_cast<size_t>(i)] + prof.blocks[static_cast<size_t>(i)].forward_ms;
    }
    const State last{blocks_, blocks_, units_, true, false, true, kSegmentFirst, Before::Kept};
    memo_.assign(index(last) + 1, Entry{});
    top_memo_.assign(
        index(State{blocks_, blocks_, units_, true, true, true, kSegmentFirst, kLastBefore}) + 1,
        Entry{});
  }

  // The schedule, or nullopt when none fits. The stack's output is alive
  // through all of backward (the caller holds it).
  std::optional<CheckpointSchedule> solve() {
    if (top_units_ < 0) return std::nullopt;
    const State root{0, blocks_, top_units_, true, true, true, kAnyFirst, Before::Kept};
    if (cost(root) == kInfeasible) return std::nullopt;
    CheckpointSchedule schedule;
    schedule.items = build(root);
    return schedule;
  }

 private:
  static constexpr double kInfeasible = std::numeric_limits<double>::infinity();
  // What the level's first item may be: a segment's cost depends on whether
  // a plain item follows it (see level_bytes), so the choice of a segment
  // also fixes the kind of the item after it.
  enum First : int8_t { kAnyFirst, kPlainFirst, kSegmentFirst };
  // What the top-level item before s put in the offload pool: it comes back
  // during the backward of an offloading item at s (one segment ahead).
  enum class Before : int8_t {
    Kept,                // nothing
    Offloaded,           // block s - 1 alone, its input counted elsewhere
    OffloadedWithInput,  // block s - 1 alone, its input too
  };
  static constexpr Before kLastBefore = Before::OffloadedWithInput;
  // The rest of a level, from its first block s to its end e, with m units
  // left; whether s's input is counted, whether the level is the top one,
  // whether a segment may span the whole level, what the first item may be,
  // and what the item before offloaded (top level only).
  struct State {
    int64_t s, e;
    int m;
    bool counted, top, whole;
    First first;
    Before before;
  };
  enum class Choice : int8_t { Plain, Segment, KeepMatmuls, Offload };
  // 8 bytes: the table below the top level has (blocks + 1)^2 x (resolution
  // + 1) x 12 of them (40 blocks: 40 MB; 80 blocks: 160 MB); the top level's
  // has (blocks + 1) x (resolution + 1) x 36.
  struct Entry {
    float cost = -1;   // < 0: not computed
    int16_t end = -1;  // a segment's end d: [s, d)
    Choice choice = Choice::Plain;
    First next = kAnyFirst;  // after a segment: the kind of the item at d
  };
  static_assert(sizeof(Entry) == 8);

  int units_of(int64_t bytes) const { return static_cast<int>((bytes + unit_ - 1) / unit_); }
  const BlockProfile& block(int64_t i) const { return prof_.blocks[static_cast<size_t>(i)]; }

  // Top-level states all end at blocks_ and have no use for e; the others
  // never follow an offload.
  size_t index(const State& x) const {
    const auto b = static_cast<size_t>(blocks_ + 1);
    size_t i = static_cast<size_t>(x.s);
    if (!x.top) i = i * b + static_cast<size_t>(x.e);
    i = i * (static_cast<size_t>(units_) + 1) + static_cast<size_t>(x.m);
    i = (i * 2 + x.counted) * 2 + x.whole;
    if (x.top) i = i * 3 + static_cast<size_t>(x.before);
    return i * 3 + static_cast<size_t>(x.first);
  }
  Entry& entry_of(const State& x) { return (x.top ? top_memo_ : memo_)[index(x)]; }

  // The bytes block s keeps, offloaded alone: everything a plain run keeps.
  int64_t offloaded_bytes(int64_t s, bool counted) const {
    return plain_kept(block(s), counted, s == blocks_ - 1);
  }

  double cost(const State& x) {
    const int64_t s = x.s, e = x.e;
    const int m = x.m;
    const bool counted = x.counted, top = x.top, whole = x.whole;
    const First first = x.first;
    // The end of the top level is the end of the forward: the rest of the
    // step runs on what is left.
    if (s == e) return top && m < after_forward_ ? kInfeasible : 0;
    if (m < 0) return kInfeasible;
    Entry& entry = entry_of(x);
    if (entry.cost >= 0) return static_cast<double>(entry.cost);
    Entry best{static_cast<float>(kInfeasible)};
    auto consider = [&](double total, Choice choice, int64_t end, First next) {
      if (total < static_cast<double>(best.cost)) {
        best = {static_cast<float>(total), static_cast<int16_t>(end), choice, next};
      }
    };
    auto rest = [&](int64_t from, int left, bool from_counted, First next, Before before) {
      return cost(State{from, e, left, from_counted, top, true, next, before});
    };
    const int64_t waiting = top ? 0 : block(e - 1).output_bytes;
    // A plain first block.
    const BlockProfile& b = block(s);
    const int kept = units_of(plain_kept(b, counted, s == blocks_ - 1));
    const int need = std::max(units_of(waiting + b.forward_peak), kept + units_of(b.backward_peak));
    if (first != kSegmentFirst && need <= m) {
      consider(rest(s + 1, m - kept, b.keeps_output, kAnyFirst, Before::Kept), Choice::Plain, -1,
               kAnyFirst);
    }
    // Block s alone offloaded (level_bytes's KeepAllPacked): nothing stays on
    // the device; in backward, what the item before offloaded comes back
    // beside it.
    if (offload_ && top && first != kPlainFirst) {
      // Its input is in the pool already where the item before offloaded it.
      const bool input_packed = x.before != Before::Kept && block(s - 1).keeps_output;
      const int64_t bytes = offloaded_bytes(s, counted || input_packed);
      const int ahead = x.before == Before::Kept
                            ? 0
                            : units_of(offloaded_bytes(s - 1, x.before == Before::Offloaded));
      if (std::max(units_of(b.forward_peak), units_of(bytes) + units_of(b.backward_peak) + ahead) <=
          m) {
        const double copies = static_cast<double>(bytes) / (1 << 20) * prof_.offload_ms_per_mib;
        const Before next =
            counted || input_packed ? Before::Offloaded : Before::OffloadedWithInput;
        // The next item counts its input: on the device where it holds it.
        consider(copies + rest(s + 1, m, false, kAnyFirst, next), Choice::Offload, s + 1,
                 kAnyFirst);
      }
    }
    // A segment [s, d) first.
    const int input = counted ? 0 : units_of(b.input_bytes);
    int64_t passing = waiting;  // plus the largest forward peak of [s, d)
    int64_t largest = 0;
    for (int64_t d = s + 1; d <= e && input <= m && first != kPlainFirst; ++d) {
      largest = std::max(largest, block(d - 1).forward_peak);
      if (d == e && !whole) continue;  // a segment of exactly its parent's blocks changes nothing
      if (input + units_of(passing + largest) > m) break;  // longer segments only pass more
      const double forward =
          prefix_ms_[static_cast<size_t>(d)] - prefix_ms_[static_cast<size_t>(s)];
      // What follows: nothing, or a plain item (the segment's output lingers
      // during its replay, below the top level) or a segment.
      for (First next : d == e ? std::vector<First>{kAnyFirst}
                               : std::vector<First>{kPlainFirst, kSegmentFirst}) {
        const int lingering = !top && next == kPlainFirst ? units_of(block(d - 1).output_bytes) : 0;
        if (top && d == s + 1 && b.selective) {  // block s alone, keeping its matmul outputs
          const BlockProfile::Selective& kept_matmuls = *b.selective;
          const int held = units_of(kept_matmuls.kept_bytes);
          const int own =
              std::max(units_of(passing + largest), held + units_of(kept_matmuls.backward_peak));
          if (input + lingering + own <= m) {
            consider(
                kept_matmuls.recompute_ms + rest(d, m - input - held, false, next, Before::Kept),
                Choice::KeepMatmuls, d, next);
          }
        }
        if (input + lingering + units_of(passing + largest) > m) continue;
        const double inside =
            cost(State{s, d, m - input - lingering, true, false, false, kAnyFirst, Before::Kept});
        if (inside == kInfeasible) continue;
        consider(forward + inside + rest(d, m - input, false, next, Before::Kept), Choice::Segment,
                 d, next);
      }
    }
    entry = best;
    return static_cast<double>(entry.cost);
  }

  std::vector<Item> build(State x) {
    std::vector<Item> items;
    while (x.s < x.e) {
      cost(x);
      const Entry entry = entry_of(x);
      const int64_t s = x.s;
      const bool input_counted =
          x.counted || (x.before != Before::Kept && block(s - 1).keeps_output);
      if (entry.choice == Choice::Plain) {
        items.push_back(Item::plain(s));
        x.m -= units_of(plain_kept(block(s), x.counted, s == blocks_ - 1));
        x.counted = block(s).keeps_output;
        x.s = s + 1;
        x.first = kAnyFirst;
      } else if (entry.choice == Choice::Offload) {
        items.push_back(Item::segment_of({Item::plain(s)}, Policy::offload()));
        x.counted = false;
        x.s = s + 1;
        x.first = kAnyFirst;
      } else {
        const int64_t d = entry.end;
        const int input = x.counted ? 0 : units_of(block(s).input_bytes);
        const int lingering =
            !x.top && entry.next == kPlainFirst ? units_of(block(d - 1).output_bytes) : 0;
        if (entry.choice == Choice::KeepMatmuls) {
          items.push_back(Item::segment_of({Item::plain(s)}, checkpointing::keep_matmuls_policy()));
          x.m -= units_of(block(s).selective->kept_bytes);
        } else {
          items.push_back(Item::segment_of(build(
              State{s, d, x.m - input - lingering, true, false, false, kAnyFirst, Before::Kept})));
        }
        x.m -= input;
        x.counted = false;
        x.s = d;
        x.first = entry.next;
      }
      x.before = Before::Kept;
      if (entry.choice == Choice::Offload) {
        x.before = input_counted ? Before::Offloaded : Before::OffloadedWithInput;
      }
      x.whole = true;
    }
    return items;
  }

  const StepProfile& prof_;
  int64_t blocks_;
  bool offload_;  // the choices allow it and the profile priced it
  int64_t unit_ = 1;
  int units_ = 0;
  int top_units_ = 0;
  int after_forward_ = 0;  // in units, beyond what the step holds during backward
  std::vector<double> prefix_ms_;
  std::vector<Entry> memo_;      // below the top level
  std::vector<Entry> top_memo_;  // the top level
};

}  // namespace

// A bisection over budgets: a schedule that fits one budget fits every larger one.
int64_t minimum_budget(const StepProfile& prof, int resolution, const PlanChoices& choices) {
  int64_t hi =
      predict_peak(prof, CheckpointSchedule{[&] {
                     std::vector<Item> plain;
                     for (int64_t i = 0; i < static_cast<int64_t>(prof.blocks.size()); ++i) {
                       plain.push_back(Item::plain(i));
                     }
                     return plain;
                   }()});
  int64_t lo = 0;
  while (hi - lo > std::max<int64_t>(1, hi / 1000)) {
    const int64_t mid = lo + (hi - lo) / 2;
    (checkpointing::schedule_within(prof, mid, resolution, choices) ? hi : lo) = mid;
  }
  return hi;
}

StepProfile profile_blocks(const std::vector<Block>& blocks, const Tensor& x) {
  REMAT_CHECK(GradMode::is_enabled(), "profile_blocks: needs grad mode (it records each block)");
  StepProfile prof;
  prof.input_shape = x.shape();
  prof.dtype = x.dtype();
  prof.device = x.device();
  // The profile is not a step: it leaves the random stream and the
  // BatchNorm running statistics where the real forward will find them.
  const PhiloxState generator = generator_state();
  ops::ReplaySideEffectsScope no_side_effects;
  memory::TagScope tag("profile");
  Tensor current = x;
  for (const Block& block : blocks) prof.blocks.push_back(profile_one(block, current));
  int64_t largest_kept = 0;
  for (const BlockProfile& b : prof.blocks) largest_kept = std::max(largest_kept, b.kept_bytes);
  // Small copies are cache-bound, large ones take long to time.
  prof.offload_ms_per_mib =
      offload_ms_per_mib(prof.device, std::clamp<int64_t>(largest_kept, 64 << 10, 16 << 20));
  set_generator_state(generator);
  return prof;
}

int64_t predict_peak(const StepProfile& profile, const CheckpointSchedule& schedule) {
  check_covers(profile, schedule);
  if (profile.blocks.empty()) return 0;
  const LevelBytes top = level_bytes(profile, schedule.items, true, 0, true);
  // The stack's output is alive through all of backward: the caller holds it.
  return profile.blocks.back().output_bytes +
         std::max(top.peak + profile.during_backward_bytes, top.kept + profile.after_forward_bytes);
}

double predict_recompute_ms(const StepProfile& profile, const CheckpointSchedule& schedule) {
  check_covers(profile, schedule);
  return level_recompute_ms(profile, schedule.items, true);
}

double predict_offload_ms(const StepProfile& profile, const CheckpointSchedule& schedule) {
  check_covers(profile, schedule);
  if (profile.blocks.empty()) return 0;
  const int64_t bytes = level_bytes(profile, schedule.items, true, 0, true).offloaded;
  return static_cast<double>(bytes) / (1 << 20) * profile.offload_ms_per_mib;
}

namespace checkpointing {
std::optional<CheckpointSchedule> schedule_within(const StepProfile& profile, int64_t bytes,
                                                  int resolution, const PlanChoices& choices) {
  REMAT_CHECK(resolution >= 1, "plan_for_budget: resolution must be >= 1, got {}", resolution);
  if (profile.blocks.empty()) return CheckpointSchedule{};
  if (bytes <= 0) return std::nullopt;
  return Planner(profile, bytes, resolution, choices).solve();
}
}  // namespace checkpointing

CheckpointSchedule plan_for_budget(const StepProfile& profile, int64_t bytes, int resolution,
                                   const PlanChoices& choices) {
  if (std::optional<CheckpointSchedule> s =
          checkpointing::schedule_within(profile, bytes, resolution, choices)) {
    return *s;
  }
  const int64_t minimum = minimum_budget(profile, resolution, choices);
  throw Error(fmt::format(
      "checkpoint budget of {} bytes ({:.1f} MiB) is below what {} blocks need under any "
      "schedule: the smallest feasible budget is {} bytes ({:.1f} MiB)",
      bytes, static_cast<double>(bytes) / (1 << 20), profile.blocks.size(), minimum,
      static_cast<double>(minimum) / (1 << 20)));
}

}  // namespace remat
