// CheckpointPlan::parse on arbitrary strings: a plan it accepts must print a
// name that parses back to the same plan.
#include <string>

#include "fuzz.h"
#include "remat/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto plan = remat::fuzz::accepted([&] { return remat::CheckpointPlan::parse(text); });
  if (!plan) return 0;
  const std::string name = plan->name();
  const std::string again = remat::CheckpointPlan::parse(name).name();
  remat::fuzz::expect(again == name, "'{}' parsed as '{}', which parses as '{}'", text, name,
                      again);
  return 0;
}
