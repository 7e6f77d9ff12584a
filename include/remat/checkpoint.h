// checkpoint(): run a stretch of the model as one segment of the tape. The
// segment keeps its inputs and what it read from outside (weights); every
// tensor it produced is dropped as soon as the forward no longer needs it.
// When backward reaches the segment, its entries are replayed from the tape
// (fn is not called again) to regenerate what backward needs. Gradients are
// bitwise identical to the same program without checkpoint; random ops replay
// the same numbers; side effects (BatchNorm running statistics) are not
// repeated. See docs/checkpointing.md.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "remat/core/tensor.h"

namespace remat {

namespace ops {
struct OpDef;  // an op of the registry (src/ops/registry.h)
}

// What a segment keeps of its own results, and where it keeps them.
class Policy {
 public:
  enum class Kind { RecomputeAll, SaveOps, SaveAll };
  // Where the activations a segment keeps live until backward reads them:
  // what its entries save for backward and the inputs it holds for replay,
  // when an op on the tape made them (parameters, inputs and constants stay
  // where they are).
  enum class Placement {
    Device,    // where they were made
    Offload,   // copied to the device's offload pool, copied back in backward
    Compress,  // stored in fewer bits (format()), decompressed in backward
  };
  // Keep nothing; replay regenerates every dropped tensor (the default).
  static Policy recompute_all() { return Policy(Kind::RecomputeAll, {}, {}); }
  // Keep the outputs of the named ops (e.g. {"matmul"}) and recompute the
  // rest: replay runs only what the dropped tensors depend on. A name that is
  // not an op of the registry throws Error listing the op names.
  static Policy save_ops(std::set<std::string> op_names);
  // Keep what a plain run keeps, none of it recomputed, in the offload pool:
  // copied out as it is made, copied back in backward one segment ahead of
  // need (docs/checkpointing.md, "Offload and compression").
  static Policy offload() { return Policy(Kind::SaveAll, {}, {}).offloaded(); }
  // Keep what a plain run keeps, compressed to `format`: kBFloat16, kInt8 or
  // kFloat8E4M3, the 8-bit ones with a float32 scale per block of 256
  // (kernels/quantize.h). Lossy: gradients are no longer exact
  // (docs/checkpointing.md has the measured error).
  static Policy compress(DType format) { return Policy(Kind::SaveAll, {}, {}).compressed(format); }
  // This policy with what it keeps offloaded or compressed:
  //   Policy::save_ops({"matmul"}).offloaded()   kept matmul outputs in the pool
  //   Policy::recompute_all().offloaded()        only the replay's inputs, in the pool
  Policy offloaded() const;
  Policy compressed(DType format) const;

  Kind kind() const { return kind_; }
  Placement placement() const { return placement_; }
  DType format() const { return format_; }  // of Placement::Compress
  const std::set<std::string>& saved_ops() const { return names_; }
  // As C++ spells it: "Policy::save_ops({matmul}).compressed(int8)".
  std::string str() const;
  bool operator==(const Policy&) const = default;
  // Whether a segment keeps the outputs of this op: a compare per kept op,
  // no string lookup, on every entry a segment records.
  bool keeps(const ops::OpDef& op) const {
    return kind_ == Kind::SaveAll || std::find(ops_.begin(), ops_.end(), &op) != ops_.end();
  }

 private:
  Policy(Kind kind, std::set<std::string> names, std::vector<const ops::OpDef*> ops)
      : kind_(kind), names_(std::move(names)), ops_(std::move(ops)) {}
  Kind kind_;
  Placement placement_ = Placement::Device;
  DType format_ = kFloat32;
  std::set<std::string> names_;
  std::vector<const ops::OpDef*> ops_;  // resolved from names_ in the registry
};

struct CheckpointOptions {
  Policy policy = Policy::recompute_all();
  // On replay, check every regenerated tensor's shape, dtype and device and
  // its bytes against a hash taken in the original forward; a mismatch throws
  // naming the op and its position in the segment. Costs a hash per dropped
  // tensor in the forward.
  bool debug = false;
  // Labels the segment's replay in the allocator timeline ("replay:<tag>").
  std::string tag = "checkpoint";
  // Called when backward first reaches an entry of the segment (or of one
  // nested in it), before that entry's backward runs or anything is
  // regenerated: once per backward pass. The budget plan measures what the
  // step needs after the stack's forward with it.
  std::function<void()> on_backward;
};

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x,
                  CheckpointOptions opts = {});
std::vector<Tensor> checkpoint(
    const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& fn,
    const std::vector<Tensor>& inputs, CheckpointOptions opts = {});

// The segment count that balances kept boundaries against one segment's
// activations for L blocks: round(sqrt(L)), at least 1 (Chen et al. 2016).
int sqrt_segments(size_t blocks);

// Splits fns into `segments` consecutive groups (default: sqrt_segments(L)) and
// checkpoints each; with checkpoint_last = false the last group runs plainly
// (its activations are needed at once by backward anyway).
Tensor checkpoint_sequential(const std::vector<std::function<Tensor(const Tensor&)>>& fns,
                             int segments, const Tensor& x, CheckpointOptions opts = {},
                             bool checkpoint_last = true);
Tensor checkpoint_sequential(const std::vector<std::function<Tensor(const Tensor&)>>& fns,
                             const Tensor& x);

// How a stack of blocks is checkpointed, as a tree: each item covers blocks
// [begin, end) and is either one block run plainly or a checkpoint segment
// of child items (nested segments are segments among the children). Every
// named plan is one of these; the budget planner makes others.
struct CheckpointSchedule {
  struct Item {
    int64_t begin = 0, end = 0;
    bool segment = false;
    // A segment's own policy (the selective plan's Policy::save_ops({"matmul"}),
    // the offload and compress plans'); none: the caller's opts.policy.
    std::optional<Policy> policy;
    std::vector<Item> children;  // a segment's contents, covering [begin, end)

    static Item plain(int64_t block) { return {block, block + 1, false, std::nullopt, {}}; }
    static Item segment_of(std::vector<Item> children, std::optional<Policy> policy = {}) {
      const int64_t first = children.front().begin, last = children.back().end;
      return {first, last, true, std::move(policy), std::move(children)};
    }
  };
  std::vector<Item> items;  // the top level, covering every block in order

  // Throws Error unless the items cover [0, blocks) in order, a segment's
  // children cover the segment and a plain item is one block.
  void validate(int64_t blocks) const;
  // One line per block: the segments it is in (outermost first) or "plain".
  std::string describe() const;
};

// What one block costs, measured by profile_blocks: the numbers the memory
// estimator and the budget planner work from (docs/checkpointing.md).
struct BlockProfile {
  double forward_ms = 0;      // one forward, wall time (CUDA: synchronised)
  int64_t input_bytes = 0;    // the block's input (the previous block's output)
  int64_t output_bytes = 0;   // its output
  int64_t kept_bytes = 0;     // what a plain forward keeps for backward, input and output aside
  bool keeps_input = false;   // its backward reads its input, so a plain run keeps it alive
  bool keeps_output = false;  // its backward reads its output
  int64_t forward_peak = 0;   // peak above the live set during its plain forward
  int64_t backward_peak = 0;  // peak above the live set (what it kept included) during its
                              // backward: incoming and input gradients and temporaries
  // The block alone in a segment keeping its matmul outputs
  // (Policy::save_ops({"matmul"})), as the selective plan runs it.
  struct Selective {
    int64_t kept_bytes = 0;     // what the segment keeps besides its output: the matmul outputs
    int64_t backward_peak = 0;  // peak above the live set during its backward, the replay of
                                // the other ops included
    double recompute_ms = 0;    // that replay: its backward's time less the plain backward's
  };
  std::optional<Selective> selective;  // profile_blocks measures it; without it the planner
                                       // does not consider the block selective
};

struct StepProfile {
  std::vector<BlockProfile> blocks;
  // What the step needs after the stack's forward, above what is alive when
  // the forward returns: the loss head's forward and backward until backward
  // reaches the stack. The budget plan measures it in its first step;
  // profile_blocks leaves it 0.
  int64_t after_forward_bytes = 0;
  // What the step holds besides the stack while backward runs through it
  // (the loss head's output the caller still holds, say), measured by the
  // budget plan when backward reaches the stack; profile_blocks leaves it 0.
  int64_t during_backward_bytes = 0;
  // A round trip through the device's offload pool (copied out and back,
  // waited for), per MiB, measured on the largest kept size: the budget
  // planner's price for offloading (PlanChoices). On CUDA the copies overlap
  // compute, so this bounds what offload costs a step.
  double offload_ms_per_mib = 0;
  Shape input_shape;  // the input the profile was taken with: a new shape needs a new one
  DType dtype = kFloat32;
  Device device = kCPU;
};

// Runs each block on its own, from the output of the one before (the first
// from x), recording it and running its backward from a gradient of ones,
// then once more alone in a segment keeping its matmul outputs, and measures
// both through the allocator's statistics. Only one block's
// tape is alive at a time, so it needs little more memory than the largest
// block. Parameters' gradients are left as they were. Needs grad mode and
// blocks whose parameters require grad.
StepProfile profile_blocks(const std::vector<std::function<Tensor(const Tensor&)>>& blocks,
                           const Tensor& x);

// The peak bytes above what is alive when the stack starts (parameters,
// gradients, the input) that a forward and backward of the stack under the
// schedule reaches, with profile.after_forward_bytes on top of what the
// forward keeps and profile.during_backward_bytes on top of the backward, as
// docs/checkpointing.md derives it from the profile.
// A segment keeping matmul outputs is modelled for one block alone, from its
// measurement in the profile; any other throws NotImplementedError.
int64_t predict_peak(const StepProfile& profile, const CheckpointSchedule& schedule);
// The forward time that the schedule's replays repeat, in ms.
double predict_recompute_ms(const StepProfile& profile, const CheckpointSchedule& schedule);
// The round trip of what the schedule's single-block offload segments keep,
// in ms, at the profile's offload_ms_per_mib (the planner's price for them).
double predict_offload_ms(const StepProfile& profile, const CheckpointSchedule& schedule);

// What plan_for_budget may choose besides running a block plainly,
// recomputing segments of blocks and (for blocks whose profile measured it)
// keeping a block's matmul outputs in a segment of its own.
struct PlanChoices {
  // A block alone in a segment keeping everything in the offload pool
  // (Policy::offload()), outside other segments, priced at its kept bytes'
  // round trip (StepProfile::offload_ms_per_mib).
  bool offload = false;
};

// The schedule with the least predicted cost (recompute time, plus the
// round trip of what it offloads) whose predicted_peak is at most `bytes`
// (optimal at block granularity over every nesting and the choices; sizes
// rounded up to 1/`resolution` of the budget). Throws Error naming the
// smallest budget that is feasible when none fits.
CheckpointSchedule plan_for_budget(const StepProfile& profile, int64_t bytes, int resolution = 256,
                                   const PlanChoices& choices = {});

// The smallest budget plan_for_budget can meet (found by bisection).
int64_t minimum_budget(const StepProfile& profile, int resolution = 256,
                       const PlanChoices& choices = {});

// Parses "512MiB", "2GiB", "100KB" (KB/MB/GB are powers of 1000) or plain bytes.
int64_t parse_bytes(const std::string& text);

// A named way to checkpoint a stack of blocks, as the examples' and
// benchmarks' --checkpoint flag spells it (docs/checkpointing.md):
//   none          no checkpoint
//   block         every block its own segment
//   every-N       consecutive groups of N blocks, each group one segment
//   alternate     every other block its own segment (blocks 0, 2, 4, ...), the rest plain
//   sqrt          round(sqrt(L)) equal groups (checkpoint_sequential)
//   selective     every block its own segment, keeping matmul outputs (Policy::save_ops)
//   nested        round(sqrt(L)) groups, each block inside them an inner segment
//   offload       every block its own segment keeping everything in the offload
//                 pool (Policy::offload())
//   offload-inputs  every block its own segment, recomputed, its input in the
//                 offload pool (Policy::recompute_all().offloaded())
//   compress-bf16, compress-int8, compress-fp8
//                 every block its own segment keeping everything compressed
//                 (Policy::compress(kBFloat16 | kInt8 | kFloat8E4M3))
//   budget:SIZE   the planner's schedule for a training step whose peak of
//                 allocated bytes on the stack's device stays within SIZE
//                 (profiled on the first call and whenever the input's shape
//                 changes; see checkpoint_blocks)
//   budget-offload:SIZE
//                 the same, the planner also choosing to offload blocks
//                 (PlanChoices::offload)
struct CheckpointPlan {
  enum class Kind {
    None,
    Block,
    EveryN,
    Alternate,
    Sqrt,
    Selective,
    Nested,
    Offload,
    OffloadInputs,
    Compress,
    Budget
  };
  Kind kind = Kind::None;
  int group = 1;             // blocks per segment for every-N
  int64_t budget_bytes = 0;  // for budget
  PlanChoices choices;       // for budget
  DType format = kBFloat16;  // for compress

  // Throws remat::Error listing the accepted names for anything else.
  static CheckpointPlan parse(const std::string& name);
  // The budget plan of `bytes` (what "budget:<bytes>" parses to; with
  // choices.offload, "budget-offload:<bytes>").
  static CheckpointPlan budget(int64_t bytes, const PlanChoices& choices = {});
  std::string name() const;
  // The policy the plan gives its segments (selective, offload, offload-inputs,
  // compress); none: the caller's opts.policy.
  std::optional<Policy> segment_policy() const;
  // The schedule for `blocks` blocks; for a budget plan, the one planned
  // last (throws before its first checkpoint_blocks call).
  CheckpointSchedule schedule(int64_t blocks) const;
  // The schedule per block, with a budget plan's predicted peak and
  // recompute time; without a count, the blocks a budget plan last planned.
  std::string describe(std::optional<int64_t> blocks = std::nullopt) const;

  // A budget plan's profile once checkpoint_blocks has taken it, else null.
  const StepProfile* profile() const;

  // A budget plan's profile and schedule, shared by copies of the plan.
  struct BudgetState;
  std::shared_ptr<BudgetState> state;
};

// Runs x through the blocks in order, checkpointed as the plan says.
// opts.policy is overridden by the selective plan; the tag and debug flag
// apply to every segment. A budget plan profiles the blocks on its first call
// (and when x's shape changes), runs that step under the schedule of least
// memory and measures what the step needs after the stack's forward; from the
// next call on it runs the schedule of least cost (plan.choices) whose predicted step
// peak (what is alive when the stack starts, plus the stack's predicted peak)
// fits the budget. Every call measures the step before it; one over the
// budget makes the plan keep the excess free from then on. Throws Error
// naming the smallest feasible budget when the budget cannot be met.
Tensor checkpoint_blocks(const std::vector<std::function<Tensor(const Tensor&)>>& blocks,
                         const Tensor& x, const CheckpointPlan& plan, CheckpointOptions opts = {});
Tensor checkpoint_blocks(const std::vector<std::function<Tensor(const Tensor&)>>& blocks,
                         const Tensor& x, const CheckpointSchedule& schedule,
                         CheckpointOptions opts = {});

// Counters of this thread's replays since the last reset.
struct CheckpointStats {
  int64_t segments_replayed = 0;
  int64_t ops_replayed = 0;  // forward re-runs of tape entries
};
CheckpointStats checkpoint_stats();
void reset_checkpoint_stats();

// The dynamic mode: a hard memory limit that needs no plan. While the guard
// lives, reserved bytes on `device` never pass `bytes`: a request that would
// pass it first frees the allocator's cache, then has the tape evict tensors
// it holds for backward and can make again (outputs of entries recorded while
// a guard lived, outside checkpoint segments, that no handle outside the tape
// holds), chosen by farthest next use per regeneration cost (in backward) or
// staleness per cost (in the forward), preferring a tensor whose block lets
// the request be served. An evicted tensor is regenerated from the tape when
// read, with the same kernels and attributes: gradients are bitwise
// identical, random ops repeat their numbers, side effects are not repeated.
// When nothing evictable is left, the request throws OutOfMemoryError naming
// what holds the memory. The previous limit comes back when the guard ends;
// what it evicted is still regenerated when read. Guards on one device nest.
// Allocator statistics count evictions and regenerations; timeline events of
// both are tagged "evict" and "regenerate". See docs/checkpointing.md.
class BudgetGuard {
 public:
  BudgetGuard(Device device, int64_t bytes);
  ~BudgetGuard();
  BudgetGuard(const BudgetGuard&) = delete;
  BudgetGuard& operator=(const BudgetGuard&) = delete;

 private:
  Device device_;
  int64_t previous_limit_;
};

}  // namespace remat
