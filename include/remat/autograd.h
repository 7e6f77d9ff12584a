// Reverse-mode differentiation over the tape.
#pragma once

#include <vector>

#include "remat/core/grad_mode.h"
#include "remat/core/tensor.h"

namespace remat {

// Accumulates d(root)/d(leaf) into every leaf's .grad that requires grad.
// `gradient` seeds the root; it may be omitted only for a one-element root.
// Without retain_graph every tape entry frees its saved tensors as soon as its
// backward has run, and a second backward through them throws.
void backward(const Tensor& root, const Tensor& gradient = {}, bool retain_graph = false);
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& gradients,
              bool retain_graph = false);

// Clears one tensor's .grad before the next backward: drops it (the next
// backward then takes its first gradient as computed), or with set_to_none =
// false zeroes it in place so its bytes stay allocated. What Module and
// Optimizer zero_grad do for each parameter.
void zero_grad(const Tensor& t, bool set_to_none = true);

}  // namespace remat
