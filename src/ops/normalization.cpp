// TODO(helper): layer_norm,batch_norm
#include "ops/dispatch.h"

namespace remat::ops {
void register_normalization_ops(Registry&) {}
}  // namespace remat::ops
