#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> normalization_samples() { return {}; }

}  // namespace remat::testing
