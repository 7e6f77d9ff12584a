// TODO(helper): embedding
#include "ops/dispatch.h"

namespace remat::ops {
void register_embedding_ops(Registry&) {}
}  // namespace remat::ops
