// A batch of samples, as the data loaders hand them to a training loop.
#pragma once

#include "remat/core/tensor.h"

namespace remat::data {

// Model inputs and what the model should predict from them; both have the
// batch as their first dimension.
struct Batch {
  Tensor inputs;
  Tensor targets;
};

}  // namespace remat::data
