#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> pool_samples() { return {}; }

}  // namespace remat::testing
