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
#include <set>
#include <string>
#include <vector>

#include "remat/core/tensor.h"

namespace remat {

namespace ops {
struct OpDef;  // an op of the registry (src/ops/registry.h)
}

// What a segment keeps of its own results.
class Policy {
 public:
  enum class Kind { RecomputeAll, SaveOps, Offload };
  // Keep nothing; replay regenerates every dropped tensor (the default).
  static Policy recompute_all() { return Policy(Kind::RecomputeAll, {}, {}); }
  // Keep the outputs of the named ops (e.g. {"matmul"}) and recompute the
  // rest: replay runs only what the dropped tensors depend on. A name that is
  // not an op of the registry throws Error listing the op names.
  static Policy save_ops(std::set<std::string> op_names);
  // Move saved tensors to pinned host memory: not implemented yet (throws).
  static Policy offload() { return Policy(Kind::Offload, {}, {}); }

  Kind kind() const { return kind_; }
  const std::set<std::string>& saved_ops() const { return names_; }
  // Whether a segment keeps the outputs of this op: a compare per kept op,
  // no string lookup, on every entry a segment records.
  bool keeps(const ops::OpDef& op) const {
    return std::find(ops_.begin(), ops_.end(), &op) != ops_.end();
  }

 private:
  Policy(Kind kind, std::set<std::string> names, std::vector<const ops::OpDef*> ops)
      : kind_(kind), names_(std::move(names)), ops_(std::move(ops)) {}
  Kind kind_;
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

// A named way to checkpoint a stack of blocks, as the examples' and
// benchmarks' --checkpoint flag spells it (docs/checkpointing.md):
//   none       no checkpoint
//   block      every block its own segment
//   every-N    consecutive groups of N blocks, each group one segment
//   alternate  every other block its own segment (blocks 0, 2, 4, ...), the rest plain
//   sqrt       round(sqrt(L)) equal groups (checkpoint_sequential)
//   selective  every block its own segment, keeping matmul outputs (Policy::save_ops)
//   nested     round(sqrt(L)) groups, each block inside them an inner segment
struct CheckpointPlan {
  enum class Kind { None, Block, EveryN, Alternate, Sqrt, Selective, Nested };
  Kind kind = Kind::None;
  int group = 1;  // blocks per segment for every-N

  // Throws remat::Error listing the accepted names for anything else.
  static CheckpointPlan parse(const std::string& name);
  std::string name() const;
};

// Runs x through the blocks in order, checkpointed as the plan says.
// opts.policy is overridden by the selective plan; the tag and debug flag
// apply to every segment.
Tensor checkpoint_blocks(const std::vector<std::function<Tensor(const Tensor&)>>& blocks,
                         const Tensor& x, const CheckpointPlan& plan, CheckpointOptions opts = {});

// Counters of this thread's replays since the last reset.
struct CheckpointStats {
  int64_t segments_replayed = 0;
  int64_t ops_replayed = 0;  // forward re-runs of tape entries
};
CheckpointStats checkpoint_stats();
void reset_checkpoint_stats();

}  // namespace remat
