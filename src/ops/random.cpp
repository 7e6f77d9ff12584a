// TODO(helper): dropout
#include "ops/dispatch.h"

namespace remat::ops {
void register_random_ops(Registry&) {}
}  // namespace remat::ops
