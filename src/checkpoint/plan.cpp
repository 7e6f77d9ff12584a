// CheckpointPlan: the named plans of the --checkpoint flag and the budget plan, as
// schedules (trees of segments) run over a stack of blocks.
#include <charconv>
#include <limits>
#include <optional>
#include <span>

#include "checkpoint/budget.h"
#include "checkpoint/groups.h"
#include "remat/checkpoint.h"
#include "remat/core/error.h"
#include "remat/core/grad_mode.h"
#include "remat/memory/memory.h"

namespace remat {

// A budget plan bounds the peak of allocated bytes on the stack's device over
// whole steps: what is alive when the stack starts (`base`: parameters,
// gradients, optimizer state, the input), the stack's forward and backward
// (predicted from the profile), and what the step needs after the stack's
// forward (the loss head, measured in the first step). Each call measures the
// step before it: one that went over the budget makes the plan keep the
// excess free from then on (docs/checkpointing.md).
struct CheckpointPlan::BudgetState {
  std::optional<StepProfile> profile;
  CheckpointSchedule schedule;
  int64_t blocks = -1;
  CheckpointSchedule frugal;  // the schedule of least predicted peak: the first step's
  bool first_step = false;    // the step running is the profiled one, under `frugal`
  std::unique_ptr<memory::PeakWatch> step_watch;  // from the last call's stack start on
  std::unique_ptr<memory::PeakWatch> head_watch;  // from the first step's stack end on
  int64_t first_base = 0;                         // allocated when the first step's stack started
  int64_t stack_end = 0;                          // allocated when the first step's stack returned
  int64_t planned_base = 0;
  int64_t margin = 0;           // what steps went over the budget by, kept free since
  int64_t last_step_peak = -1;  // measured, of the step before the last call
};

namespace {

using Block = std::function<Tensor(const Tensor&)>;
using Item = CheckpointSchedule::Item;

constexpr const char* kPlanNames =
    "none, block, every-N (N >= 1), alternate, sqrt, selective, nested, offload, offload-inputs, "
    "compress-bf16, compress-int8, compress-fp8, budget:SIZE (512MiB, 2GiB, bytes), "
    "budget-offload:SIZE";

// A budget plan's name before its size: "budget", or "budget-offload" where
// the planner may offload.
const char* budget_kind(const PlanChoices& choices) {
  return choices.offload ? "budget-offload" : "budget";
}

// The compress plans' formats, by their names' suffix.
constexpr std::pair<const char*, DType> kCompressFormats[] = {
    {"bf16", kBFloat16}, {"int8", kInt8}, {"fp8", kFloat8E4M3}};

std::vector<Item> plain_run(int64_t begin, int64_t end) {
  std::vector<Item> items;
  for (int64_t i = begin; i < end; ++i) items.push_back(Item::plain(i));
  return items;
}

Tensor run_items(const std::vector<Block>& blocks, std::span<const Item> items, const Tensor& x,
                 const CheckpointOptions& opts) {
  Tensor h = x;
  for (const Item& item : items) {
    if (!item.segment) {
      h = blocks[static_cast<size_t>(item.begin)](h);
      continue;
    }
    CheckpointOptions inner = opts;
    if (item.policy) inner.policy = *item.policy;
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
    std::string here = fmt::format("[{}-{}]", item.begin, item.end - 1);
    if (item.policy) here += fmt::format(" {}", item.policy->str());
    describe_items(
        item.children,
        outer.empty() ? fmt::format("segment {}", here) : fmt::format("{} > {}", outer, here),
        lines);
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

namespace {
// The largest binary unit that states `bytes` exactly, as parse_bytes reads it.
std::string size_name(int64_t bytes) {
  for (auto [name, shift] : {std::pair{"GiB", 30}, {"MiB", 20}, {"KiB", 10}}) {
    if (bytes != 0 && bytes % (int64_t{1} << shift) == 0) {
      return fmt::format("{}{}", bytes >> shift, name);
    }
  }
  return std::to_string(bytes);
}
}  // namespace

CheckpointPlan CheckpointPlan::parse(const std::string& name) {
  using K = Kind;
  if (name == "none") return {K::None};
  // The plans below are spelled as in the --checkpoint flag.
  if (name == "block") return {K::Block};
  if (name == "alternate") return {K::Alternate};
  if (name == "sqrt") return {K::Sqrt};
  if (name == "selective") return {K::Selective};
  if (name == "nested") return {K::Nested};
  if (name == "offload") return {K::Offload};
  if (name == "offload-inputs") return {K::OffloadInputs};
  for (const auto& [suffix, format] : kCompressFormats) {
    if (name == fmt::format("compress-{}", suffix)) return {.kind = K::Compress, .format = format};
  }
  const std::string every = "every-";
  if (name.starts_with(every)) {
    int group = 0;
    const char* first = name.data() + every.size();
    const char* last = name.data() + name.size();
    auto [end, error] = std::from_chars(first, last, group);
    if (error == std::errc() && end == last && group >= 1) return {K::EveryN, group};
  }
  for (const bool offload : {false, true}) {
    const PlanChoices choices{.offload = offload};
    const std::string prefix = fmt::format("{}:", budget_kind(choices));
    if (name.starts_with(prefix)) return budget(parse_bytes(name.substr(prefix.size())), choices);
  }
  throw Error(fmt::format("unknown checkpoint plan '{}': expected one of {}", name, kPlanNames));
}

CheckpointPlan CheckpointPlan::budget(int64_t bytes, const PlanChoices& choices) {
  REMAT_CHECK(bytes > 0, "checkpoint budget must be positive, got {} bytes", bytes);
  CheckpointPlan plan{Kind::Budget};
  plan.budget_bytes = bytes;
  plan.choices = choices;
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
    case Kind::Offload: return "offload";
    case Kind::OffloadInputs: return "offload-inputs";
    case Kind::Compress:
      for (const auto& [suffix, f] : kCompressFormats) {
        if (f == format) return fmt::format("compress-{}", suffix);
      }
      break;
    case Kind::Budget: return fmt::format("{}:{}", budget_kind(choices), size_name(budget_bytes));
  }
  return "?";
}

std::optional<Policy> CheckpointPlan::segment_policy() const {
  switch (kind) {
    case Kind::Selective: return checkpointing::keep_matmuls_policy();
    case Kind::Offload: return Policy::offload();
    case Kind::OffloadInputs: return Policy::recompute_all().offloaded();
    case Kind::Compress: return Policy::compress(format);
    default: return std::nullopt;
  }
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
    case K::Offload:
    case K::OffloadInputs:
    case K::Compress: {
      const std::optional<Policy> policy = segment_policy();
      for (int64_t i = 0; i < blocks; ++i)
        s.items.push_back(Item::segment_of({Item::plain(i)}, policy));
      break;
    }
    case K::EveryN:
      for (int64_t begin = 0; begin < blocks; begin += group) {
        s.items.push_back(
            Item::segment_of(plain_run(begin, std::min<int64_t>(blocks, begin + group))));
      }
      break;
    case K::Alternate:
      for (int64_t i = 0; i < blocks; ++i)
        s.items.push_back(i % 2 == 0 ? Item::segment_of({Item::plain(i)}) : Item::plain(i));
      break;
    case K::Sqrt:
      for (auto [begin, end] : checkpointing::consecutive_groups(blocks, sqrt_groups))
        s.items.push_back(Item::segment_of(plain_run(begin, end)));
      break;
    case K::Nested:
      for (auto [begin, end] : checkpointing::consecutive_groups(blocks, sqrt_groups)) {
        std::vector<Item> inner;
        for (int64_t i = begin; i < end; ++i) inner.push_back(Item::segment_of({Item::plain(i)}));
        s.items.push_back(Item::segment_of(std::move(inner)));
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

const StepProfile* CheckpointPlan::profile() const {
  return state && state->profile ? &*state->profile : nullptr;
}

std::string CheckpointPlan::describe(std::optional<int64_t> count) const {
  REMAT_CHECK(count || (kind == Kind::Budget && state->blocks >= 0),
              "CheckpointPlan::describe: plan {} needs the number of blocks", name());
  const int64_t blocks = count ? *count : state->blocks;
  const CheckpointSchedule s = schedule(blocks);
  std::string out = fmt::format("checkpoint plan {}\n", name());
  if (kind == Kind::Budget && state->profile) {
    const StepProfile& prof = *state->profile;
    auto mib = [](int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
    out += fmt::format("profiled with input {} ({})\n", shape_str(prof.input_shape), prof.dtype);
    out += fmt::format(
        "budget {:.1f} MiB for the step: {:.1f} MiB alive when the stack starts, {:.1f} MiB "
        "needed after its forward{}, {:.1f} MiB kept free after steps over the budget\n",
        mib(budget_bytes), mib(state->planned_base), mib(prof.after_forward_bytes),
        state->first_step ? " (measuring in this step)" : " (measured)", mib(state->margin));
    out += fmt::format(
        "predicted step peak {:.1f} MiB ({:.1f} MiB above the stack's start), recompute {:.2f} "
        "ms{}{}\n",
        mib(state->planned_base + predict_peak(prof, s)), mib(predict_peak(prof, s)),
        predict_recompute_ms(prof, s),
        choices.offload
            ? fmt::format(", offload round trips {:.2f} ms", predict_offload_ms(prof, s))
            : "",
        state->last_step_peak < 0
            ? ""
            : fmt::format("; the step before peaked at {:.1f} MiB", mib(state->last_step_peak)));
    std::vector<std::string> lines(static_cast<size_t>(blocks));
    describe_items(s.items, "", lines);
    for (int64_t i = 0; i < blocks; ++i) {
      const BlockProfile& b = prof.blocks[static_cast<size_t>(i)];
      out += fmt::format("block {}: {} (forward {:.2f} ms, keeps {:.1f} MiB, output {:.1f} MiB)\n",
                         i, lines[static_cast<size_t>(i)], b.forward_ms, mib(b.kept_bytes),
                         mib(b.output_bytes));
    }
    return out;
  }
  return out + s.describe();
}

namespace {

int64_t allocated_now(Device d) { return memory::stats(d).allocated_bytes.current; }

// The schedule of least predicted peak, which the profiled step runs. Its
// last item is a segment, so that the step sees backward reach the stack
// (on_backward) and measures what the step needed after the forward.
CheckpointSchedule frugal_schedule(const StepProfile& prof, const PlanChoices& choices) {
  CheckpointSchedule s =
      checkpointing::schedule_within(prof, minimum_budget(prof, 256, choices), 256, choices)
          .value();
  Item& last = s.items.back();
  if (!last.segment) last = Item::segment_of({Item::plain(last.begin)});
  return s;
}

[[noreturn]] void throw_infeasible(const CheckpointPlan& plan, const StepProfile& prof,
                                   int64_t minimum, const std::string& why) {
  throw Error(fmt::format(
      "checkpoint plan {}:{} ({:.1f} MiB): {} blocks with input {} {} {} bytes ({:.1f} MiB): "
      "the smallest feasible budget is {} bytes",
      budget_kind(plan.choices), plan.budget_bytes,
      static_cast<double>(plan.budget_bytes) / (1 << 20), prof.blocks.size(),
      shape_str(prof.input_shape), why, minimum, static_cast<double>(minimum) / (1 << 20),
      minimum));
}

// Ends the first step's measurement of what the step needs after the
// stack's forward: the peak since the forward returned, above what it left.
void measure_after_forward(CheckpointPlan::BudgetState& st) {
  st.profile->after_forward_bytes = st.head_watch->peak() - st.stack_end;
  st.head_watch.reset();
}

// The first step of a new profile: the frugal schedule, measured.
Tensor run_first_step(const std::vector<Block>& blocks, const Tensor& x, const CheckpointPlan& plan,
                      const CheckpointOptions& opts) {
  CheckpointPlan::BudgetState& st = *plan.state;
  const Device d = x.device();
  st.step_watch = std::make_unique<memory::PeakWatch>(d);  // the profile is part of the step
  st.profile = profile_blocks(blocks, x);
  st.blocks = static_cast<int64_t>(blocks.size());
  st.frugal = frugal_schedule(*st.profile, plan.choices);
  st.schedule = st.frugal;
  st.planned_base = allocated_now(d);
  st.first_base = st.planned_base;
  st.margin = 0;
  const int64_t least = st.planned_base + predict_peak(*st.profile, st.frugal);
  if (least > plan.budget_bytes) {
    const StepProfile prof = *std::move(st.profile);
    st.profile.reset();  // the next call profiles again, and says so again
    throw_infeasible(plan, prof, least, "need at least, with what is alive when the stack starts,");
  }
  st.first_step = true;
  const std::span<const Item> items(st.schedule.items);
  Tensor h = run_items(blocks, items.first(items.size() - 1), x, opts);
  CheckpointOptions last = opts;
  last.on_backward = [weak = std::weak_ptr(plan.state), d] {
    const auto state = weak.lock();
    if (!state || !state->head_watch) return;
    StepProfile& prof = *state->profile;
    // Beyond what the stack held when its forward returned and the gradient
    // of its output (the estimator counts both).
    prof.during_backward_bytes =
        std::max<int64_t>(0, allocated_now(d) - state->stack_end - prof.blocks.back().output_bytes);
    measure_after_forward(*state);
  };
  h = run_items(blocks, items.last(1), h, last);
  st.stack_end = allocated_now(d);
  st.head_watch = std::make_unique<memory::PeakWatch>(d);
  return h;
}

// Whether the estimate may be one boundary tensor short of the schedule's
// peak: where a segment of several blocks is followed by a plain block, the
// step holds one more than the estimator predicts (measured on the
// transformer stack; the cause is not found yet).
bool may_be_short(const std::vector<Item>& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& item = items[i];
    if (!item.segment) continue;
    if (item.end - item.begin > 1 && i + 1 < items.size() && !items[i + 1].segment) return true;
    if (may_be_short(item.children)) return true;
  }
  return false;
}

// The schedule of least recompute within `room` bytes above the stack's
// start, planned again with one block output in reserve where the estimate
// may be short of it.
std::optional<CheckpointSchedule> schedule_for(const StepProfile& prof, int64_t room,
                                               const PlanChoices& choices) {
  std::optional<CheckpointSchedule> s = checkpointing::schedule_within(prof, room, 256, choices);
  if (!s || !may_be_short(s->items)) return s;
  int64_t reserve = 0;
  for (const BlockProfile& b : prof.blocks) reserve = std::max(reserve, b.output_bytes);
  return checkpointing::schedule_within(prof, room - reserve, 256, choices);
}

// Every later step: measures the one before, and plans again when it went
// over the budget, when more is alive at the start than planned for, and
// after the first step.
Tensor run_planned_step(const std::vector<Block>& blocks, const Tensor& x,
                        const CheckpointPlan& plan, const CheckpointOptions& opts) {
  CheckpointPlan::BudgetState& st = *plan.state;
  StepProfile& prof = *st.profile;
  const int64_t budget = plan.budget_bytes;
  st.last_step_peak = st.step_watch->peak();
  bool replan = false;
  if (st.first_step) {
    st.first_step = false;
    replan = true;
    // Backward never reached the stack: the rest of the step counts.
    if (st.head_watch) measure_after_forward(st);
    if (st.last_step_peak > budget) {
      throw_infeasible(
          plan, prof, st.last_step_peak,
          "took, in the step that profiled them and ran the schedule of least memory,");
    }
  }
  if (!replan && st.last_step_peak > budget) {
    // The estimate was short by the excess and more: keep what it missed by free.
    const int64_t predicted = st.planned_base + predict_peak(prof, st.schedule);
    st.margin = std::max(st.margin + st.last_step_peak - budget, st.last_step_peak - predicted);
    replan = true;
  }
  const int64_t base = allocated_now(x.device());
  if (replan || base > st.planned_base) {
    st.planned_base = base;
    if (auto fits = schedule_for(prof, budget - base - st.margin, plan.choices)) {
      st.schedule = *std::move(fits);
    } else {
      // The frugal schedule fits if the first step showed it with as much
      // alive, or if the estimate says so with what is alive now (more than
      // in the first step when that one made the gradients and optimizer state).
      const int64_t least = base + st.margin + predict_peak(prof, st.frugal);
      if (least > budget && base > st.first_base) {
        throw_infeasible(plan, prof, least,
                         "need at least, with what is alive when the stack starts now,");
      }
      st.schedule = st.frugal;
    }
  }
  st.step_watch->restart();
  return run_items(blocks, st.schedule.items, x, opts);
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
    const CheckpointPlan::BudgetState& state = *plan.state;
    const bool profiled = state.profile && state.blocks == count &&
                          state.profile->input_shape == x.shape() &&
                          state.profile->dtype == x.dtype() && state.profile->device == x.device();
    return profiled ? run_planned_step(blocks, x, plan, opts)
                    : run_first_step(blocks, x, plan, opts);
  }
  if (plan.kind == CheckpointPlan::Kind::Budget)
    return run_items(blocks, plain_run(0, count), x, opts);
  return checkpoint_blocks(blocks, x, plan.schedule(count), std::move(opts));
}

}  // namespace remat
