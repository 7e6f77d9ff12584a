// CheckpointPlan: the named plans of the --checkpoint flag and the budget plan, as
// schedules (trees of segments) run over a stack of blocks.
#include <charconv>
#include <limits>
#include <optional>

#include "checkpoint/groups.h"
#include "remat/checkpoint.h"
#include "remat/core/error.h"
#include "remat/core/grad_mode.h"

namespace remat {

struct CheckpointPlan::BudgetState {
  std::optional<StepProfile> profile;
  CheckpointSchedule schedule;
  int64_t blocks = -1;
};

namespace {

using Block = std::function<Tensor(const Tensor&)>;
using Item = CheckpointSchedule::Item;

constexpr const char* kPlanNames =
    "none, block, every-N (N >= 1), alternate, sqrt, selective, nested, budget:SIZE (512MiB, "
    "2GiB, bytes)";

Item plain(int64_t i) { return {i, i + 1, false, false, {}}; }
Item segment(std::vector<Item> children, bool keep_matmuls = false) {
  return {children.front().begin, children.back().end, true, keep_matmuls, std::move(children)};
}
std::vector<Item> plain_run(int64_t begin, int64_t end) {
  std::vector<Item> items;
  for (int64_t i = begin; i < end; ++i) items.push_back(plain(i));
  return items;
}

Tensor run_items(const std::vector<Block>& blocks, const std::vector<Item>& items, const Tensor& x,
                 const CheckpointOptions& opts) {
  Tensor h = x;
  for (const Item& item : items) {
    if (!item.segment) {
      h = blocks[static_cast<size_t>(item.begin)](h);
      continue;
    }
    // Resolved in the registry once, not per segment and step.
    static const Policy keep_matmuls = Policy::save_ops({"matmul"});
    CheckpointOptions inner = opts;
    if (item.keep_matmuls) inner.policy = keep_matmuls;
    h = checkpoint([&](const Tensor& in) { return run_items(blocks, item.children, in, opts); }, h,
                   inner);
  }
  return h;
}

void validate_items(const std::vector<Item>& items, int64_t begin, int64_t end) {
  int64_t at = begin;
  for (const Item& item : items) {
    REMAT_CHECK(item.begin == at && item.end > item.begin && item.end <= end,
                "checkpoint schedule: item [{}, {}) does not continue at block {} within [{}, {})",
                item.begin, item.end, at, begin, end);
    if (item.segment) {
      validate_items(item.children, item.begin, item.end);
    } else {
      REMAT_CHECK(item.end == item.begin + 1 && item.children.empty(),
                  "checkpoint schedule: a plain item is one block, got [{}, {})", item.begin,
                  item.end);
    }
    at = item.end;
  }
  REMAT_CHECK(at == end, "checkpoint schedule: items end at block {}, not {}", at, end);
}

void describe_items(const std::vector<Item>& items, const std::string& outer,
                    std::vector<std::string>& lines) {
  for (const Item& item : items) {
    if (!item.segment) {
      lines[static_cast<size_t>(item.begin)] = outer.empty() ? "plain" : outer;
      continue;
    }
    const std::string here = fmt::format("[{}-{}]{}", item.begin, item.end - 1,
                                         item.keep_matmuls ? " keeping matmuls" : "");
    describe_items(item.children, outer.empty() ? "segment " + here : outer + " > " + here, lines);
  }
}

}  // namespace

void CheckpointSchedule::validate(int64_t blocks) const { validate_items(items, 0, blocks); }

std::string CheckpointSchedule::describe() const {
  const int64_t blocks = items.empty() ? 0 : items.back().end;
  std::vector<std::string> lines(static_cast<size_t>(blocks));
  describe_items(items, "", lines);
  std::string out;
  for (int64_t i = 0; i < blocks; ++i) {
    out += fmt::format("block {}: {}\n", i, lines[static_cast<size_t>(i)]);
  }
  return out;
}

int64_t parse_bytes(const std::string& text) {
  int64_t value = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto [end, error] = std::from_chars(first, last, value);
  const std::string unit(end, last);
  const std::pair<const char*, int64_t> units[] = {
      {"", 1},      {"B", 1},        {"KiB", 1LL << 10}, {"MiB", 1LL << 20}, {"GiB", 1LL << 30},
      {"KB", 1000}, {"MB", 1000000}, {"GB", 1000000000}};
  if (error == std::errc() && end != first && value >= 0) {
    for (const auto& [name, scale] : units) {
      if (unit == name && value <= std::numeric_limits<int64_t>::max() / scale) {
        return value * scale;
      }
    }
  }
  throw Error(fmt::format(
      "cannot read '{}' as a size: expected a whole number of bytes, optionally followed by "
      "B, KiB, MiB, GiB, KB, MB or GB",
      text));
}

CheckpointPlan CheckpointPlan::parse(const std::string& name) {
  using K = Kind;
  if (name == "none") return {K::None};
  // The plans below are spelled as in the --checkpoint flag.
  if (name == "block") return {K::Block};
  if (name == "alternate") return {K::Alternate};
  if (name == "sqrt") return {K::Sqrt};
  if (name == "selective") return {K::Selective};
  if (name == "nested") return {K::Nested};
  const std::string every = "every-";
  if (name.starts_with(every)) {
    int group = 0;
    const char* first = name.data() + every.size();
    const char* last = name.data() + name.size();
    auto [end, error] = std::from_chars(first, last, group);
    if (error == std::errc() && end == last && group >= 1) return {K::EveryN, group};
  }
  const std::string budget_prefix = "budget:";
  if (name.starts_with(budget_prefix))
    return budget(parse_bytes(name.substr(budget_prefix.size())));
  throw Error(fmt::format("unknown checkpoint plan '{}': expected one of {}", name, kPlanNames));
}

CheckpointPlan CheckpointPlan::budget(int64_t bytes) {
  REMAT_CHECK(bytes > 0, "checkpoint budget must be positive, got {} bytes", bytes);
  CheckpointPlan plan{Kind::Budget};
  plan.budget_bytes = bytes;
  plan.state = std::make_shared<BudgetState>();
  return plan;
}

std::string CheckpointPlan::name() const {
  switch (kind) {
    case Kind::None: return "none";
    case Kind::Block: return "block";
    case Kind::EveryN: return fmt::format("every-{}", group);
    case Kind::Alternate: return "alternate";
    case Kind::Sqrt: return "sqrt";
    case Kind::Selective: return "selective";
    case Kind::Nested: return "nested";
    case Kind::Budget: return fmt::format("budget:{}", budget_bytes);
  }
  return "?";
}

CheckpointSchedule CheckpointPlan::schedule(int64_t blocks) const {
  using K = Kind;
  CheckpointSchedule s;
  if (blocks == 0) return s;
  const int64_t sqrt_groups = sqrt_segments(static_cast<size_t>(blocks));
  switch (kind) {
    case K::None: s.items = plain_run(0, blocks); break;
    case K::Block:
    case K::Selective:
      for (int64_t i = 0; i < blocks; ++i)
        s.items.push_back(segment({plain(i)}, kind == K::Selective));
      break;
    case K::EveryN:
      for (int64_t begin = 0; begin < blocks; begin += group) {
        s.items.push_back(segment(plain_run(begin, std::min<int64_t>(blocks, begin + group))));
      }
      break;
    case K::Alternate:
      for (int64_t i = 0; i < blocks; ++i)
        s.items.push_back(i % 2 == 0 ? segment({plain(i)}) : plain(i));
      break;
    case K::Sqrt:
      for (auto [begin, end] : checkpointing::consecutive_groups(blocks, sqrt_groups))
        s.items.push_back(segment(plain_run(begin, end)));
      break;
    case K::Nested:
      for (auto [begin, end] : checkpointing::consecutive_groups(blocks, sqrt_groups)) {
        std::vector<Item> inner;
        for (int64_t i = begin; i < end; ++i) inner.push_back(segment({plain(i)}));
        s.items.push_back(segment(std::move(inner)));
      }
      break;
    case K::Budget:
      REMAT_CHECK(state && state->blocks == blocks,
                  "checkpoint plan {}: no schedule for {} blocks yet (checkpoint_blocks plans it "
                  "on its first call)",
                  name(), blocks);
      return state->schedule;
  }
  return s;
}

std::string CheckpointPlan::describe(std::optional<int64_t> count) const {
  REMAT_CHECK(count || (kind == Kind::Budget && state->blocks >= 0),
              "CheckpointPlan::describe: plan {} needs the number of blocks", name());
  const int64_t blocks = count ? *count : state->blocks;
  const CheckpointSchedule s = schedule(blocks);
  std::string out = fmt::format("checkpoint plan {}\n", name());
  if (kind == Kind::Budget && state->profile) {
    const StepProfile& prof = *state->profile;
    out += fmt::format("profiled with input {} ({})\n", shape_str(prof.input_shape), prof.dtype);
    out += fmt::format(
        "predicted peak of the stack {:.1f} MiB (budget {:.1f} MiB), recompute {:.2f} ms\n",
        static_cast<double>(predict_peak(prof, s)) / (1 << 20),
        static_cast<double>(budget_bytes) / (1 << 20), predict_recompute_ms(prof, s));
    std::vector<std::string> lines(static_cast<size_t>(blocks));
    describe_items(s.items, "", lines);
    for (int64_t i = 0; i < blocks; ++i) {
      const BlockProfile& b = prof.blocks[static_cast<size_t>(i)];
      out += fmt::format("block {}: {} (forward {:.2f} ms, keeps {:.1f} MiB, output {:.1f} MiB)\n",
                         i, lines[static_cast<size_t>(i)], b.forward_ms,
                         static_cast<double>(b.kept_bytes) / (1 << 20),
                         static_cast<double>(b.output_bytes) / (1 << 20));
    }
    return out;
  }
  return out + s.describe();
}

// A budget plan's schedule. It plans for the budget less one block output:
// the estimator matches the allocator to the byte on the named plans, but
// where a segment of several blocks is followed by a plain block the step
// holds one boundary tensor more than it predicts (measured on the
// transformer stack).
namespace {
CheckpointSchedule budget_schedule(const StepProfile& prof, int64_t budget) {
  int64_t reserve = 0;
  for (const BlockProfile& b : prof.blocks) reserve = std::max(reserve, b.output_bytes);
  try {
    return plan_for_budget(prof, budget - reserve);
  } catch (const Error&) {
    const int64_t minimum = minimum_budget(prof) + reserve;
    throw Error(fmt::format(
        "checkpoint plan budget:{}: {} blocks with input {} need more under any schedule: the "
        "smallest feasible budget is {} bytes ({:.1f} MiB)",
        budget, prof.blocks.size(), shape_str(prof.input_shape), minimum,
        static_cast<double>(minimum) / (1 << 20)));
  }
}
}  // namespace

Tensor checkpoint_blocks(const std::vector<Block>& blocks, const Tensor& x,
                         const CheckpointSchedule& schedule, CheckpointOptions opts) {
  schedule.validate(static_cast<int64_t>(blocks.size()));
  return run_items(blocks, schedule.items, x, opts);
}

Tensor checkpoint_blocks(const std::vector<Block>& blocks, const Tensor& x,
                         const CheckpointPlan& plan, CheckpointOptions opts) {
  const auto count = static_cast<int64_t>(blocks.size());
  if (count == 0) return x;  // every plan of no blocks is the identity
  if (plan.kind == CheckpointPlan::Kind::Budget && GradMode::is_enabled()) {
    CheckpointPlan::BudgetState& state = *plan.state;
    if (!state.profile || state.blocks != count || state.profile->input_shape != x.shape() ||
        state.profile->dtype != x.dtype() || state.profile->device != x.device()) {
      state.profile = profile_blocks(blocks, x);
      state.schedule = budget_schedule(*state.profile, plan.budget_bytes);
      state.blocks = count;
    }
    return checkpoint_blocks(blocks, x, state.schedule, std::move(opts));
  }
  if (plan.kind == CheckpointPlan::Kind::Budget)
    return run_items(blocks, plain_run(0, count), x, opts);
  return checkpoint_blocks(blocks, x, plan.schedule(count), std::move(opts));
}

}  // namespace remat
