#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> attention_samples() { return {}; }

}  // namespace remat::testing
