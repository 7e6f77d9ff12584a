// TODO(helper): scaled_dot_product_attention
#include "ops/dispatch.h"

namespace remat::ops {
void register_attention_ops(Registry&) {}
}  // namespace remat::ops
