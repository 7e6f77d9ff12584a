// The elementwise kernels that CPU kernels of other families call as one step
// of their work (gemm and conv pack operands with copy, embedding and conv
// zero with fill, conv adds partial sums with binary): the table's entries
// (kernels/elementwise.h) by name.
#pragma once

#include "kernels/elementwise.h"

namespace remat::kernels::cpu {

inline void copy(const Tensor& src, const Tensor& dst) { elementwise_kernels.copy(src, dst); }
inline void fill(const Tensor& out, double value) { elementwise_kernels.fill(out, value); }
inline void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  elementwise_kernels.binary(op, a, b, out);
}

}  // namespace remat::kernels::cpu
