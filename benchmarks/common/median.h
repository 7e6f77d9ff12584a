// The statistic every benchmark here reports: timings on a shared machine are
// noisy, and the median ignores the outliers a mean would carry.
#pragma once

#include <algorithm>
#include <vector>

namespace bench {

// The middle value (the upper one of an even count); `values` must not be empty.
inline double median(std::vector<double> values) {
  auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  return *middle;
}

}  // namespace bench
