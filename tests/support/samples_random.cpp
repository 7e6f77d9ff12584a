#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> random_samples() { return {}; }

}  // namespace remat::testing
