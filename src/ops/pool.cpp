// TODO(helper): pooling
#include "ops/dispatch.h"

namespace remat::ops {
void register_pool_ops(Registry&) {}
}  // namespace remat::ops
