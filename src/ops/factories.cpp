// Tensor creation. Random factories draw from the default Philox stream.
#include "kernels/random.h"
#include "ops/dispatch.h"
#include "ops/elementwise_defs.h"
#include "remat/core/generator.h"

namespace remat {

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  REMAT_CHECK_SHAPE(static_cast<int64_t>(values.size()) == numel_of(shape),
                    "from_vector: {} values for shape {} ({} elements)", values.size(),
                    shape_str(shape), numel_of(shape));
  Tensor out = Tensor::empty(shape, dtype_of_v<T>, kCPU);
  T* p = out.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return out.to(device);
}
template Tensor from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor from_vector(const std::vector<int64_t>&, const Shape&, Device);
template Tensor from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor from_vector(const std::vector<BFloat16>&, const Shape&, Device);
template Tensor from_vector(const std::vector<Float16>&, const Shape&, Device);
template Tensor from_vector(const std::vector<int8_t>&, const Shape&, Device);
template Tensor from_vector(const std::vector<Float8E4M3>&, const Shape&, Device);

// std::vector<bool> is bit-packed, so it gets its own loop.
template <>
Tensor from_vector(const std::vector<bool>& values, const Shape& shape, Device device) {
  REMAT_CHECK_SHAPE(static_cast<int64_t>(values.size()) == numel_of(shape),
                    "from_vector: {} values for shape {}", values.size(), shape_str(shape));
  Tensor out = Tensor::empty(shape, kBool, kCPU);
  bool* p = out.data<bool>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return out.to(device);
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor out = Tensor::empty(shape, dtype, device);
  ops::elementwise_kernels("full", device).fill(out, value);
  return out;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
Tensor ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  REMAT_CHECK(step != 0, "arange: step is zero");
  auto n = static_cast<int64_t>(std::max(0.0, std::ceil((end - start) / step)));
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    values[static_cast<size_t>(i)] = start + static_cast<double>(i) * step;
  return from_vector(values, {n}).to(dtype).to(device);
}
Tensor arange(int64_t end, DType dtype, Device device) {
  return arange(0.0, static_cast<double>(end), 1.0, dtype, device);
}

namespace {
Tensor random_tensor(const char* name, const Shape& shape, DType dtype, Device device,
                     kernels::Distribution dist) {
  REMAT_CHECK(is_floating(dtype), "{}: dtype must be floating point, got {}", name, dtype);
  Tensor out = Tensor::empty(shape, dtype, device);
  // Normals use two uniforms each.
  PhiloxState s = reserve_philox(out.numel() * (dist == kernels::Distribution::Normal ? 2 : 1));
  ops::kernels_for(name, device, kernels::cpu::random_kernels, REMAT_CUDA_KERNELS(random_kernels))
      .fill(out, dist, s.seed, s.offset);
  return out;
}
}  // namespace

Tensor randn(const Shape& shape, DType dtype, Device device) {
  return random_tensor("randn", shape, dtype, device, kernels::Distribution::Normal);
}
Tensor rand(const Shape& shape, DType dtype, Device device) {
  return random_tensor("rand", shape, dtype, device, kernels::Distribution::Uniform);
}

}  // namespace remat
