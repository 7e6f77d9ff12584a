#include "core/overlap.h"

#include <algorithm>
#include <utility>

namespace remat {
namespace {

// (|stride|, size) of t's dims with more than one element, by stride.
std::vector<std::pair<int64_t, int64_t>> sorted_dims(const Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (size_t d = 0; d < t.shape().size(); ++d) {
    if (t.shape()[d] > 1) dims.emplace_back(std::abs(t.strides()[d]), t.shape()[d]);
  }
  std::sort(dims.begin(), dims.end());
  return dims;
}

// Non-overlapping and dense: t's elements fill its memory range exactly, so a
// range shared with another tensor is shared elements.
bool is_dense(const Tensor& t) {
  int64_t expected = 1;
  for (auto [stride, size] : sorted_dims(t)) {
    if (stride != expected) return false;
    expected *= size;
  }
  return true;
}

// The bytes [begin, end) of storage that t's elements occupy.
std::pair<int64_t, int64_t> byte_range(const Tensor& t) {
  int64_t lo = t.offset(), hi = t.offset();
  for (size_t d = 0; d < t.shape().size(); ++d) {
    const int64_t reach = t.strides()[d] * (t.shape()[d] - 1);
    (reach < 0 ? lo : hi) += reach;
  }
  const auto size = static_cast<int64_t>(t.element_size());
  return {lo * size, (hi + 1) * size};
}

std::string layout(const Tensor& t) {
  return fmt::format("{} (strides {}, offset {})", TensorMeta::of(t).str(), shape_str(t.strides()),
                     t.offset());
}

}  // namespace

bool has_internal_overlap(const Tensor& t) {
  int64_t reach = 0;  // the largest offset the smaller dims reach
  for (auto [stride, size] : sorted_dims(t)) {
    if (stride <= reach) return true;
    reach += stride * (size - 1);
  }
  return false;
}

Overlap overlap(const Tensor& dst, const Tensor& src) {
  if (!dst.is_alias_of(src) || dst.numel() == 0 || src.numel() == 0) return Overlap::None;
  bool same = src.offset() == dst.offset() && src.dtype() == dst.dtype() && src.dim() <= dst.dim();
  const Strides seen = same ? broadcast_strides(src, dst.shape()) : Strides{};
  for (size_t d = 0; same && d < dst.shape().size(); ++d) {
    same = dst.shape()[d] == 1 || seen[d] == dst.strides()[d];
  }
  if (same) return Overlap::Same;
  const auto [a_begin, a_end] = byte_range(dst);
  const auto [b_begin, b_end] = byte_range(src);
  if (a_end <= b_begin || b_end <= a_begin) return Overlap::None;
  return is_dense(dst) && is_dense(src) ? Overlap::Partial : Overlap::Unknown;
}

void check_no_internal_overlap(const char* op, const Tensor& t) {
  REMAT_CHECK(!has_internal_overlap(t),
              "{}: more than one element of the written-to tensor {} refers to a single memory "
              "location (an expanded tensor?); clone() it before writing in place",
              op, layout(t));
}

void check_written_operands(const char* op, const std::vector<Tensor>& operands,
                            std::span<const size_t> written) {
  for (size_t w : written) {
    check_no_internal_overlap(op, operands[w]);
    for (size_t j = 0; j < operands.size(); ++j) {
      if (j == w || !operands[j].defined()) continue;
      REMAT_CHECK(overlap(operands[w], operands[j]) == Overlap::None,
                  "{}: operands #{} {} and #{} {} share memory, and the op writes #{} in place", op,
                  w, layout(operands[w]), j, layout(operands[j]), w);
    }
  }
}

}  // namespace remat
