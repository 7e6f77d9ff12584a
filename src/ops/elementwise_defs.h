// Builders for elementwise op definitions, shared by the arithmetic and
// activation families (defined in elementwise.cpp).
#pragma once

#include "kernels/elementwise.h"
#include "ops/registry.h"

namespace remat::ops {

using kernels::BinaryOp;
using kernels::UnaryOp;

// The elementwise kernel table (kernels/elementwise.h) of device d, for op.
const kernels::ElementwiseKernels& elementwise_kernels(const char* op, Device d);

// A binary op with broadcasting over the table's binary(kind); `save` lists
// the inputs backward reads. A null backward makes a gradient map: the
// internal ops (relu_backward, ...) that backward formulas call.
OpDef binary_def(const char* name, BinaryOp kind, std::vector<int> save, BackwardFn backward);
// An op of a tensor and the attribute "scalar".
OpDef scalar_def(const char* name, BinaryOp kind, std::vector<int> save, BackwardFn backward);
enum class Saves { Nothing, Input, Output };
// A unary map of a floating-point tensor.
OpDef unary_def(const char* name, UnaryOp kind, Saves saves, BackwardFn backward);

}  // namespace remat::ops
