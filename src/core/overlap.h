// Memory overlap of tensors written in place (PyTorch's MemoryOverlap). A
// write through a tensor two of whose indices address one element keeps one
// of several values; a source that shares memory with its destination in
// another layout is read after the op overwrote it. Both are refused, so no
// in-place op silently computes a wrong answer.
#pragma once

#include <span>

#include "remat/core/tensor.h"

namespace remat {

// Whether two indices of t may address one element (an expanded tensor's
// stride 0). Decided from the strides alone: dims sorted by stride, each
// stride must exceed the reach of the smaller ones, which every layout the
// view ops make satisfies unless it has a stride 0.
bool has_internal_overlap(const Tensor& t);

enum class Overlap {
  None,     // no memory in common
  Same,     // each index of dst reads src at the element it writes
  Partial,  // elements certainly shared at different indices (both layouts dense)
  Unknown,  // the memory ranges intersect, and the strided layouts hide whether elements do
};
// How src, broadcast to dst's shape, shares memory with dst.
Overlap overlap(const Tensor& dst, const Tensor& src);

// Throws Error naming op unless t can be written in place (no internal overlap).
void check_no_internal_overlap(const char* op, const Tensor& t);
// For an op that writes operands[i] in place for each i in `written` (an
// optimizer's state, batch norm's running statistics): each must have no
// internal overlap and share no memory with any other defined operand.
void check_written_operands(const char* op, const std::vector<Tensor>& operands,
                            std::span<const size_t> written);

}  // namespace remat
