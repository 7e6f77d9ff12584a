// What every CUDA kernel file shares: the device-side scalar type of each
// dtype and its float accumulator, launch geometry, the current stream and
// device of a tensor, launch checks, and a strided indexer for up to 8 merged
// dims. Include from .cu files only.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"
#include "kernels/dtype_visit.h"
#include "kernels/strided.h"
#include "remat/core/stream.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// ---- dtypes -------------------------------------------------------------------

// Kernels take the host's element types (BFloat16 and Float16 are
// host/device types, remat/core/dtype.h), so a 16-bit value rounds the same
// on both backends. Arithmetic accumulates in acc_t: float for the 16-bit
// floats and float32, double for float64, T itself for integers.
template <typename T>
struct Accumulate {
  using type = T;
};
template <>
struct Accumulate<BFloat16> {
  using type = float;
};
template <>
struct Accumulate<Float16> {
  using type = float;
};
template <typename T>
using acc_t = typename Accumulate<T>::type;

template <typename T>
__host__ __device__ inline acc_t<T> to_acc(T v) {
  return static_cast<acc_t<T>>(v);
}

template <typename T, typename A>
__host__ __device__ inline T from_acc(A v) {
  if constexpr (!std::is_arithmetic_v<T>) {  // the narrow floats round from float
    return T(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

using F32 = DTypeCase<kFloat32, float>;
using F64 = DTypeCase<kFloat64, double>;
using BF16 = DTypeCase<kBFloat16, BFloat16>;
using F16 = DTypeCase<kFloat16, Float16>;

// Calls fn.template operator()<T>() with T the element type of a floating
// dtype (float, double, BFloat16, Float16); other dtypes throw naming `what`.
template <typename Fn>
void visit_floating(DType t, const char* what, Fn&& fn) {
  visit_cases<F32, F64, BF16, F16>(t, "CUDA", what, fn);
}

// visit_floating, plus int64 and int32: the dtypes arithmetic and reductions take.
template <typename Fn>
void visit_arith(DType t, const char* what, Fn&& fn) {
  visit_cases<F32, F64, BF16, F16, DTypeCase<kInt64, int64_t>, DTypeCase<kInt32, int32_t>>(
      t, "CUDA", what, fn);
}

// float32 and float64 only (as float and double): the dtypes that statistics
// and accumulators are kept in.
template <typename Fn>
void visit_float_or_double(DType t, const char* what, Fn&& fn) {
  visit_cases<F32, F64>(t, "CUDA", what, fn);
}

// ---- launch -------------------------------------------------------------------

inline constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + threads - 1) / threads, 1, 65535));
}

// for (i = this thread's first index; i < n; i += all threads in the grid)
#define REMAT_GRID_STRIDE_LOOP(i, n)                                                     \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// The stream kernels on t's device are queued on (the thread's current one).
inline cudaStream_t stream_of(const Tensor& t) {
  return static_cast<cudaStream_t>(current_stream(t.device()).handle());
}

// Makes t's device current for the scope (kernels launch on the current one).
class DeviceScope {
 public:
  explicit DeviceScope(const Tensor& t) : guard_(t.device().index) {}

 private:
  detail::CudaDeviceGuard guard_;
};

// After a launch: a bad configuration or missing kernel image is reported
// here, naming the kernel; faults inside the kernel surface at the next
// synchronising call.
#define REMAT_CUDA_LAUNCH_CHECK(kernel_name)                                                   \
  do {                                                                                         \
    cudaError_t remat_launch_err_ = cudaGetLastError();                                        \
    if (remat_launch_err_ != cudaSuccess) {                                                    \
      ::remat::detail::throw_cuda_error(remat_launch_err_, "launch of " kernel_name, __FILE__, \
                                        __LINE__);                                             \
    }                                                                                          \
  } while (0)

// ---- reductions -----------------------------------------------------------------

inline constexpr int kWarp = 32;
inline constexpr unsigned kFullMask = 0xffffffffu;

// Reduces v over groups of L adjacent lanes of a warp (L a power of two up to
// 32) with combine; every lane of the group gets the result.
template <int L = kWarp, typename T, typename Combine>
__device__ T warp_reduce(T v, Combine combine) {
  for (int o = L / 2; o > 0; o /= 2) v = combine(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Reduces v over the blockDim.x threads of a row group with combine (whose
// identity is `identity`): one warp (blockDim.x == 32) or the whole block
// (then blockDim.y == 1, blockDim.x <= kThreads). Every thread gets the
// result, in an order fixed by the launch geometry alone, so results repeat
// bit for bit.
template <typename A, typename Combine>
__device__ A group_reduce(A v, Combine combine, A identity) {
  v = warp_reduce(v, combine);
  if (blockDim.x == kWarp) return v;
  __shared__ A partial[kThreads / kWarp];
  const unsigned warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  __syncthreads();  // earlier reads of partial are done
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < blockDim.x / kWarp ? partial[lane] : identity;
  return warp_reduce(v, combine);
}

// ---- strided indexing ---------------------------------------------------------

inline constexpr int kMaxDims = 8;

// Element offsets of N operands at a linear index of the (merged) iteration
// shape, innermost dim fastest. Passed to kernels by value.
template <int N>
struct StridedIndexer {
  int ndim = 1;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};

  __device__ void offsets(int64_t linear, int64_t (&out)[N]) const {
    for (int k = 0; k < N; ++k) out[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t idx = linear % sizes[d];
      linear /= sizes[d];
      for (int k = 0; k < N; ++k) out[k] += idx * strides[k][d];
    }
  }
};

// The indexer of operands over `shape` (operand 0 is usually the output);
// throws when more than kMaxDims dims remain after merging.
template <int N>
StridedIndexer<N> make_indexer(const Shape& shape, const std::array<Strides, N>& strides) {
  const StridedLayout<N> l = merge_dims<N>(shape, strides);
  REMAT_CHECK(l.shape.size() <= static_cast<size_t>(kMaxDims),
              "CUDA kernels index at most {} non-mergeable dims, got shape {}", kMaxDims,
              fmt::join(shape, "x"));
  StridedIndexer<N> ix;
  ix.ndim = static_cast<int>(l.shape.size());
  for (int d = 0; d < ix.ndim; ++d) {
    ix.sizes[d] = l.shape[static_cast<size_t>(d)];
    for (int k = 0; k < N; ++k)
      ix.strides[k][d] = l.strides[static_cast<size_t>(k)][static_cast<size_t>(d)];
  }
  return ix;
}

}  // namespace remat::kernels::cuda
