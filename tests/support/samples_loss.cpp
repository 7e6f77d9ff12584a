#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> loss_samples() { return {}; }

}  // namespace remat::testing
