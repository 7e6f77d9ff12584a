// TODO(helper): conv2d
#include "ops/dispatch.h"

namespace remat::ops {
void register_conv_ops(Registry&) {}
}  // namespace remat::ops
