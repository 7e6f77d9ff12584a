// Random fills on the GPU (contract: kernels/random.h): a thread per element,
// 16-bit floats rounded from the float32 draw.
#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/philox.h"
#include "kernels/random.h"

namespace remat::kernels::cuda {
namespace {

template <typename T>
__global__ void fill_random_kernel(T* out, int64_t n, bool normal, uint64_t seed, uint64_t offset) {
  REMAT_GRID_STRIDE_LOOP(i, n) {
    auto u = static_cast<uint64_t>(i);
    float v = normal ? philox_normal(seed, offset, u) : philox_uniform(seed, offset, u);
    out[i] = from_acc<T>(v);
  }
}

void fill_random(const Tensor& out, Distribution dist, uint64_t seed, uint64_t offset) {
  check_contiguous("fill_random", {out});
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceScope scope(out);
  visit_dtype(out.dtype(), [&]<typename T>() {
    if constexpr (std::is_integral_v<T>) {
      throw Error(fmt::format("fill_random: dtype {} is not floating point", out.dtype()));
    } else {
      fill_random_kernel<T><<<blocks_for(n), kThreads, 0, stream_of(out)>>>(
          static_cast<T*>(out.data_ptr()), n, dist == Distribution::Normal, seed, offset);
    }
  });
  REMAT_CUDA_LAUNCH_CHECK("fill_random_kernel");
}

}  // namespace

const RandomKernels random_kernels{fill_random};

}  // namespace remat::kernels::cuda
