// Block quantization of contiguous 1-d tensors (kernels/quantize.h has the
// formats, rules and error bounds): what activation compression stores a
// tensor as. Not tape ops: no gradient, not in the op registry. They write
// their outputs in place and bump those outputs' versions.
#pragma once

#include <cstdint>

#include "kernels/quantize.h"
#include "remat/core/tensor.h"

namespace remat::ops {

// src (float32, float64, bfloat16 or float16; n elements) to codes (n
// elements of int8, float8_e4m3 or bfloat16, the format) and scales (float32,
// quant_scale_count(n) elements; unused and may be undefined for bfloat16
// codes). `zeros`: whether values below half the smallest code round to zero
// (Rounded) or only zeros are zero (Exact, for tensors whose zeros backward
// reads). Throws naming the function on any other dtype, size, device or
// layout.
void quantize_blocks(const Tensor& src, const Tensor& codes, const Tensor& scales,
                     kernels::QuantZeros zeros = kernels::QuantZeros::Rounded);

// codes and scales as quantize_blocks wrote them to dst (n elements of
// float32, float64, bfloat16 or float16), each value rounded once.
void dequantize_blocks(const Tensor& codes, const Tensor& scales, const Tensor& dst);

// The scales n elements take: one per block of kernels::kQuantBlock.
int64_t quant_scale_count(int64_t n);

}  // namespace remat::ops
