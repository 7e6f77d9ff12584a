#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> conv_samples() { return {}; }

}  // namespace remat::testing
