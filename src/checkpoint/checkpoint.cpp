// The public checkpoint API: opens a segment on the tape around fn.
#include <cmath>

#include "checkpoint/groups.h"
#include "checkpoint/segment.h"
#include "ops/registry.h"
#include "remat/core/grad_mode.h"

namespace remat {

Policy Policy::save_ops(std::set<std::string> op_names) {
  std::vector<const ops::OpDef*> defs;
  for (const std::string& name : op_names) {
    if (const ops::OpDef* def = ops::Registry::instance().find(name)) {
      defs.push_back(def);
      continue;
    }
    std::vector<std::string> known;
    for (const ops::OpDef* def : ops::Registry::instance().all()) known.push_back(def->name);
    throw Error(fmt::format("Policy::save_ops: no op named '{}'; the ops are: {}", name,
                            fmt::join(known, ", ")));
  }
  return Policy(Kind::SaveOps, std::move(op_names), std::move(defs));
}

std::string Policy::str() const {
  // Keeping everything is reachable only through offload() and compress().
  if (kind_ == Kind::SaveAll) {
    return placement_ == Placement::Offload ? "Policy::offload()"
                                            : fmt::format("Policy::compress({})", format_);
  }
  std::string out = kind_ == Kind::RecomputeAll
                        ? "Policy::recompute_all()"
                        : fmt::format("Policy::save_ops({{{}}})", fmt::join(names_, ", "));
  if (placement_ == Placement::Offload) out += ".offloaded()";
  if (placement_ == Placement::Compress) out += fmt::format(".compressed({})", format_);
  return out;
}

Policy Policy::offloaded() const {
  Policy p = *this;
  p.placement_ = Placement::Offload;
  return p;
}

Policy Policy::compressed(DType format) const {
  REMAT_CHECK(format == kBFloat16 || format == kInt8 || format == kFloat8E4M3,
              "Policy::compress: the formats are bfloat16, int8 and float8_e4m3, got {}", format);
  Policy p = *this;
  p.placement_ = Placement::Compress;
  p.format_ = format;
  return p;
}

std::vector<Tensor> checkpoint(
    const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& fn,
    const std::vector<Tensor>& inputs, CheckpointOptions opts) {
  if (!GradMode::is_enabled()) return fn(inputs);  // nothing is recorded, nothing to drop
  auto segment = std::make_shared<checkpointing::CheckpointSegment>(
      checkpointing::CheckpointSegment::active(), std::move(opts));
  std::vector<Tensor> outputs;
  {
    autograd::ActiveSegmentScope scope(segment.get());
    outputs = fn(inputs);
  }
  segment->close();
  return outputs;
}

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x,
                  CheckpointOptions opts) {
  return checkpoint([&fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0])}; },
                    std::vector<Tensor>{x}, std::move(opts))
      .at(0);
}

int sqrt_segments(size_t blocks) {
  return std::max(1, static_cast<int>(std::lround(std::sqrt(static_cast<double>(blocks)))));
}

Tensor checkpoint_sequential(const std::vector<std::function<Tensor(const Tensor&)>>& fns,
                             int segments, const Tensor& x, CheckpointOptions opts,
                             bool checkpoint_last) {
  const auto count = static_cast<int64_t>(fns.size());
  REMAT_CHECK(segments >= 1, "checkpoint_sequential: segments must be >= 1, got {}", segments);
  if (count == 0) return x;
  const auto groups = checkpointing::consecutive_groups(count, segments);
  Tensor h = x;
  for (const auto& [begin, end] : groups) {
    auto run_group = [&fns, begin = begin, end = end](const Tensor& in) {
      Tensor out = in;
      for (int64_t i = begin; i < end; ++i) out = fns[static_cast<size_t>(i)](out);
      return out;
    };
    const bool last = end == count;
    h = last && !checkpoint_last ? run_group(h) : checkpoint(run_group, h, opts);
  }
  return h;
}

Tensor checkpoint_sequential(const std::vector<std::function<Tensor(const Tensor&)>>& fns,
                             const Tensor& x) {
  return checkpoint_sequential(fns, sqrt_segments(fns.size()), x);
}

CheckpointStats checkpoint_stats() { return checkpointing::current_stats(); }
void reset_checkpoint_stats() { checkpointing::reset_stats(); }

}  // namespace remat
