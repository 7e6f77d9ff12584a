// The budget planner's search, for the budget plan (plan.cpp): the public
// plan_for_budget throws when nothing fits, this says so without the cost of
// finding the smallest feasible budget.
#pragma once

#include <optional>

#include "remat/checkpoint.h"

namespace remat::checkpointing {

// The policy of a segment keeping matmul outputs (the selective plan's),
// resolved in the registry once.
inline const Policy& keep_matmuls_policy() {
  static const Policy policy = Policy::save_ops({"matmul"});
  return policy;
}

// plan_for_budget's schedule, or nullopt when none fits `bytes`.
std::optional<CheckpointSchedule> schedule_within(const StepProfile& profile, int64_t bytes,
                                                  int resolution = 256,
                                                  const PlanChoices& choices = {});

}  // namespace remat::checkpointing
