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

}  // namespace remat
