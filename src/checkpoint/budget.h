// The budget planner's search, for the budget plan (plan.cpp): the public
// plan_for_budget throws when nothing fits, this says so without the cost of
// finding the smallest feasible budget.
#pragma once

#include <optional>

#include "remat/checkpoint.h"

namespace remat::checkpointing {

// plan_for_budget's schedule, or nullopt when none fits `bytes`.
std::optional<CheckpointSchedule> schedule_within(const StepProfile& profile, int64_t bytes,
                                                  int resolution = 256);

}  // namespace remat::checkpointing
