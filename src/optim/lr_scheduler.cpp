#include "remat/optim/lr_scheduler.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

namespace remat::optim {
namespace {

// Ramps linearly from 0 to base_lr over warmup_steps, then follows `after`.
LRScheduler::Schedule with_warmup(const char* name, double base_lr, int64_t warmup_steps,
                                  LRScheduler::Schedule after) {
  REMAT_CHECK(warmup_steps >= 0, "{}: warmup_steps must be >= 0, got {}", name, warmup_steps);
  return [=](int64_t t) {
    return t < warmup_steps ? base_lr * static_cast<double>(t) / static_cast<double>(warmup_steps)
                            : after(t);
  };
}

LRScheduler::Schedule cosine_with_warmup(double base_lr, int64_t warmup_steps, int64_t total_steps,
                                         double min_lr) {
  REMAT_CHECK(total_steps > warmup_steps,
              "CosineWithWarmup: total_steps ({}) must exceed warmup_steps ({})", total_steps,
              warmup_steps);
  REMAT_CHECK(min_lr >= 0 && min_lr <= base_lr,
              "CosineWithWarmup: min_lr must be in [0, {}] (the optimizer's rate), got {}", base_lr,
              min_lr);
  const auto decay_steps = static_cast<double>(total_steps - warmup_steps);
  return with_warmup("CosineWithWarmup", base_lr, warmup_steps, [=](int64_t t) {
    const double progress = std::min(1.0, static_cast<double>(t - warmup_steps) / decay_steps);
    return min_lr + (base_lr - min_lr) * (1 + std::cos(std::numbers::pi * progress)) / 2;
  });
}

LRScheduler::Schedule constant_with_warmup(double base_lr, int64_t warmup_steps) {
  return with_warmup("ConstantWithWarmup", base_lr, warmup_steps,
                     [base_lr](int64_t) { return base_lr; });
}

}  // namespace

LRScheduler::LRScheduler(Optimizer& optimizer, Schedule rate_at)
    : optimizer_(optimizer), rate_at_(std::move(rate_at)) {
  REMAT_CHECK(rate_at_ != nullptr, "LRScheduler: the schedule is empty");
  optimizer_.set_lr(lr_at(0));
}

void LRScheduler::step() { optimizer_.set_lr(lr_at(++steps_taken_)); }

double LRScheduler::lr_at(int64_t step) const {
  REMAT_CHECK(step >= 0, "LRScheduler: steps count from 0, got {}", step);
  return rate_at_(step);
}

CosineWithWarmup::CosineWithWarmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps,
                                   double min_lr)
    : LRScheduler(optimizer,
                  cosine_with_warmup(optimizer.lr(), warmup_steps, total_steps, min_lr)) {}

ConstantWithWarmup::ConstantWithWarmup(Optimizer& optimizer, int64_t warmup_steps)
    : LRScheduler(optimizer, constant_with_warmup(optimizer.lr(), warmup_steps)) {}

}  // namespace remat::optim
