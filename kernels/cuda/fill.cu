#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/cuda_check.h"
#include "kernels/cuda/fill.cuh"
#include "kernels/philox.h"

namespace remat::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Device-side storage type of each dtype.
template <typename T>
struct DeviceType {
  using type = T;
};
template <>
struct DeviceType<BFloat16> {
  using type = __nv_bfloat16;
};
template <>
struct DeviceType<Float16> {
  using type = __half;
};

template <typename T>
__device__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16(v);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half(v);
  } else {
    return static_cast<T>(v);
  }
}

template <typename T>
__global__ void fill_kernel(T* out, int64_t n, T value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = value;
  }
}

template <typename T>
__global__ void fill_random_kernel(T* out, int64_t n, bool normal, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    auto u = static_cast<uint64_t>(i);
    float v = normal ? philox_normal(seed, offset, u) : philox_uniform(seed, offset, u);
    out[i] = from_float<T>(v);
  }
}

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

}  // namespace

void fill(const Tensor& out, double value) {
  REMAT_CHECK(out.is_contiguous(), "fill on {}: output must be contiguous", out.device());
  const int64_t n = out.numel();
  if (n == 0) return;
  visit_dtype(out.dtype(), [&]<typename T>() {
    using D = typename DeviceType<T>::type;
    T host_value;
    if constexpr (std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>) {
      host_value = T(static_cast<float>(value));
    } else {
      host_value = static_cast<T>(value);
    }
    D device_value;
    static_assert(sizeof(D) == sizeof(T));
    std::memcpy(static_cast<void*>(&device_value), &host_value, sizeof(T));  // same bits
    fill_kernel<D><<<blocks_for(n), kThreads>>>(static_cast<D*>(out.data_ptr()), n, device_value);
  });
  REMAT_CUDA_CHECK(cudaGetLastError());
}

void fill_random(const Tensor& out, bool normal, uint64_t seed, uint64_t offset) {
  REMAT_CHECK(out.is_contiguous(), "fill_random on {}: output must be contiguous", out.device());
  const int64_t n = out.numel();
  if (n == 0) return;
  visit_dtype(out.dtype(), [&]<typename T>() {
    if constexpr (std::is_integral_v<T>) {
      throw Error(fmt::format("fill_random: dtype {} is not floating point", out.dtype()));
    } else {
      using D = typename DeviceType<T>::type;
      fill_random_kernel<D>
          <<<blocks_for(n), kThreads>>>(static_cast<D*>(out.data_ptr()), n, normal, seed, offset);
    }
  });
  REMAT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace remat::kernels::cuda
