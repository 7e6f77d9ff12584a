// The hyperparameters of one Adam/AdamW step, shared by the CPU and CUDA
// kernels (kernels/cpu/optimizer.h has the update's formulas).
#pragma once

#include <cstdint>

namespace remat::kernels {

struct AdamStep {
  double lr = 0;
  double beta1 = 0;
  double beta2 = 0;
  double eps = 0;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;  // AdamW: p *= 1 - lr * wd; Adam: g += wd * p
  int64_t step = 1;                     // this update's count, from 1 (bias correction)
};

}  // namespace remat::kernels
