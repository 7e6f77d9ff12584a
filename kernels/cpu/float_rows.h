// Float scratch rows for the row kernels that read and write 16-bit
// operands (softmax, layer_norm): one set per thread, reused. The float row
// kernels run on them and results are rounded once on store, as computing on
// a float32 copy of the tensor would, without the copy.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace remat::kernels::cpu {

// Scratch row `which` (0, 1 or 2) of this thread, at least len floats.
inline std::span<float> scratch_row(size_t which, int64_t len) {
  thread_local std::array<std::vector<float>, 3> rows;
  std::vector<float>& row = rows[which];
  if (row.size() < static_cast<size_t>(len)) row.resize(static_cast<size_t>(len));
  return {row.data(), static_cast<size_t>(len)};
}

// p[0], p[stride], ... (len values) widened into scratch row `which`.
template <typename T>
std::span<float> load_row(size_t which, const T* p, int64_t len, int64_t stride = 1) {
  std::span<float> row = scratch_row(which, len);
  for (int64_t k = 0; k < len; ++k) row[static_cast<size_t>(k)] = p[k * stride];
  return row;
}

// The row rounded to T into p[0], p[stride], ...
template <typename T>
void store_row(std::span<const float> row, T* p, int64_t stride = 1) {
  for (size_t k = 0; k < row.size(); ++k)
    p[static_cast<int64_t>(k) * stride] = static_cast<T>(row[k]);
}

}  // namespace remat::kernels::cpu
