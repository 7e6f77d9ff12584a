#include "remat/core/grad_mode.h"

namespace remat {
namespace {
thread_local bool grad_enabled = true;
}
bool GradMode::is_enabled() { return grad_enabled; }
void GradMode::set_enabled(bool on) { grad_enabled = on; }
}  // namespace remat
