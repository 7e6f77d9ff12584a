#include "support/gradcheck.h"

namespace remat::testing {

std::vector<OpSample> shape_samples() {
  std::vector<OpSample> all;
  auto add = [&](const char* op, const char* label, auto fn, Shape shape) {
    all.push_back({op,
                   label,
                   [fn](const std::vector<Tensor>& x) { return fn(x[0]); },
                   {uniform(shape, -1, 1, 31)}});
  };
  add("reshape", "view", [](const Tensor& x) { return reshape(x, {4, -1}); }, {2, 3, 2});
  add("reshape", "copy", [](const Tensor& x) { return reshape(x.transpose(0, 1), {6}); }, {2, 3});
  add("permute", "", [](const Tensor& x) { return permute(x, {2, 0, 1}); }, {2, 3, 4});
  add("slice", "step", [](const Tensor& x) { return slice(x, 1, 1, 6, 2); }, {2, 7});
  add("expand", "", [](const Tensor& x) { return expand(x, {3, 2, 4}); }, {2, 1});
  add("clone", "", [](const Tensor& x) { return x.clone(); }, {3, 2});
  add("to_dtype", "f32_roundtrip",
      [](const Tensor& x) { return x.to(kFloat32).to(kFloat64) * 0 + x; }, {3});
  add("to_device", "cpu", [](const Tensor& x) { return x.to(kCPU); }, {3});
  add("split", "", [](const Tensor& x) { return split(x, {1, 3}, 1)[1]; }, {2, 4});
  all.push_back({"concat",
                 "",
                 [](const std::vector<Tensor>& x) {
                   return concat({x[0], x[1]}, 0);
                 },
                 {uniform({2, 3}, -1, 1, 32), uniform({1, 3}, -1, 1, 33)}});
  return all;
}

}  // namespace remat::testing
