// Learning-rate schedules, in torch.optim.lr_scheduler's convention: making a
// scheduler applies the rate of step 0, and step() is called once after each
// optimizer.step(), moving to the next step's rate.
//
//   AdamW opt(params, {.lr = 3e-4});
//   CosineWithWarmup schedule(opt, /*warmup_steps=*/100, /*total_steps=*/5000);
//   for (...) { loss.backward(); opt.step(); opt.zero_grad(); schedule.step(); }
#pragma once

#include <cstdint>
#include <functional>

#include "remat/optim/optimizer.h"

namespace remat::optim {

// Sets the optimizer's rate to rate_at(t), t the number of step() calls so far
// (torch's LambdaLR, given the rate rather than a factor of it). The optimizer
// must outlive the scheduler.
class LRScheduler {
 public:
  using Schedule = std::function<double(int64_t step)>;
  LRScheduler(Optimizer& optimizer, Schedule rate_at);

  void step();
  // step() calls so far (torch's last_epoch).
  int64_t steps_taken() const { return steps_taken_; }
  // The rate at `step` (>= 0), without applying it.
  double lr_at(int64_t step) const;

 private:
  Optimizer& optimizer_;
  Schedule rate_at_;
  int64_t steps_taken_ = 0;
};

// With base = the optimizer's rate when the scheduler is made, W = warmup_steps
// and T = total_steps (0 <= W < T, 0 <= min_lr <= base):
//   t < W:       base * t / W                                         (linear from 0)
//   W <= t < T:  min_lr + (base - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2
//   t >= T:      min_lr
// transformers' get_cosine_with_min_lr_schedule_with_warmup (num_cycles 0.5),
// except that the rate stays at min_lr after T rather than rising again.
class CosineWithWarmup : public LRScheduler {
 public:
  CosineWithWarmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps,
                   double min_lr = 0);
};

// base * t / W for t < W, then base (W = warmup_steps >= 0): transformers'
// get_constant_schedule_with_warmup.
class ConstantWithWarmup : public LRScheduler {
 public:
  ConstantWithWarmup(Optimizer& optimizer, int64_t warmup_steps);
};

}  // namespace remat::optim
