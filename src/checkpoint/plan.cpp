// CheckpointPlan: the named plans of the --checkpoint flag, applied to a
// stack of blocks.
#include <charconv>

#include "remat/checkpoint.h"
#include "remat/core/error.h"

namespace remat {
namespace {

using Block = std::function<Tensor(const Tensor&)>;

constexpr const char* kPlanNames =
    "none, block, every-N (N >= 1), alternate, sqrt, selective, nested";

// Runs blocks [begin, end) plainly.
Tensor run_range(const std::vector<Block>& blocks, size_t begin, size_t end, const Tensor& x) {
  Tensor h = x;
  for (size_t i = begin; i < end; ++i) h = blocks[i](h);
  return h;
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
  const std::string prefix = "every-";
  if (name.starts_with(prefix)) {
    int group = 0;
    const char* first = name.data() + prefix.size();
    const char* last = name.data() + name.size();
    auto [end, error] = std::from_chars(first, last, group);
    if (error == std::errc() && end == last && group >= 1) return {K::EveryN, group};
  }
  throw Error(fmt::format("unknown checkpoint plan '{}': expected one of {}", name, kPlanNames));
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
  }
  return "?";
}

Tensor checkpoint_blocks(const std::vector<Block>& blocks, const Tensor& x,
                         const CheckpointPlan& plan, CheckpointOptions opts) {
  using K = CheckpointPlan::Kind;
  const size_t count = blocks.size();
  if (count == 0) return x;  // every plan of no blocks is the identity
  switch (plan.kind) {
    case K::None: return run_range(blocks, 0, count, x);
    case K::Selective: opts.policy = Policy::save_ops({"matmul"}); [[fallthrough]];
    case K::Block: return checkpoint_sequential(blocks, static_cast<int>(count), x, opts);
    case K::EveryN: {
      Tensor h = x;
      const auto group = static_cast<size_t>(plan.group);
      for (size_t begin = 0; begin < count; begin += group) {
        const size_t end = std::min(count, begin + group);
        h = checkpoint([&](const Tensor& in) { return run_range(blocks, begin, end, in); }, h,
                       opts);
      }
      return h;
    }
    case K::Alternate: {
      Tensor h = x;
      for (size_t i = 0; i < count; ++i)
        h = i % 2 == 0 ? checkpoint(blocks[i], h, opts) : blocks[i](h);
      return h;
    }
    case K::Sqrt: return checkpoint_sequential(blocks, sqrt_segments(count), x, opts);
    case K::Nested: {
      std::vector<Block> inner;
      for (const Block& b : blocks) {
        inner.push_back([&b, opts](const Tensor& in) { return checkpoint(b, in, opts); });
      }
      return checkpoint_sequential(inner, sqrt_segments(count), x, opts);
    }
  }
  return x;
}

}  // namespace remat
