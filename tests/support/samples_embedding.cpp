#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> embedding_samples() { return {}; }

}  // namespace remat::testing
