// scan_indices (kernels/cuda/index_scan.cuh): one pass over the indices, one
// small copy back.
#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/index_scan.cuh"

namespace remat::kernels::cuda {
namespace {

// slots[0] += indices not equal to skip; slots[1] = max over bad indices of
// n - position, so the zeroed slot needs no initial value and the largest
// entry names the first bad position. Each thread walks its positions in
// increasing order, so its first bad one is its largest n - position.
__global__ void scan_indices_kernel(const int64_t* idx, int64_t n, int64_t limit, bool has_skip,
                                    int64_t skip, unsigned long long* slots) {
  unsigned long long counted = 0, first_bad = 0;
  REMAT_GRID_STRIDE_LOOP(k, n) {
    const int64_t v = idx[k];
    if (has_skip && v == skip) continue;
    ++counted;
    if ((v < 0 || v >= limit) && first_bad == 0) first_bad = static_cast<unsigned long long>(n - k);
  }
  // One atomic per warp rather than per thread.
  counted = warp_reduce(counted, [](auto a, auto b) { return a + b; });
  first_bad = warp_reduce(first_bad, [](auto a, auto b) { return a > b ? a : b; });
  if (threadIdx.x % 32 == 0) {
    if (counted != 0) atomicAdd(&slots[0], counted);
    if (first_bad != 0) atomicMax(&slots[1], first_bad);
  }
}

}  // namespace

IndexScan scan_indices(const Tensor& indices, int64_t limit, std::optional<int64_t> skip) {
  check_contiguous("scan_indices", {indices});
  REMAT_CHECK(indices.dtype() == kInt64, "scan_indices: expected int64 indices, got {}",
              TensorMeta::of(indices).str());
  IndexScan scan;
  const int64_t n = indices.numel();
  if (n == 0) return scan;
  DeviceScope scope(indices);
  const cudaStream_t stream = stream_of(indices);
  const memory::Allocation slots = workspace(indices, 2 * sizeof(unsigned long long));
  auto* dev_slots = static_cast<unsigned long long*>(slots.get());
  REMAT_CUDA_CHECK(cudaMemsetAsync(dev_slots, 0, 2 * sizeof(unsigned long long), stream));
  const auto* idx = static_cast<const int64_t*>(indices.data_ptr());
  scan_indices_kernel<<<blocks_for(n), kThreads, 0, stream>>>(idx, n, limit, skip.has_value(),
                                                              skip.value_or(0), dev_slots);
  REMAT_CUDA_LAUNCH_CHECK("scan_indices_kernel");
  unsigned long long host_slots[2];
  REMAT_CUDA_CHECK(
      cudaMemcpyAsync(host_slots, dev_slots, sizeof(host_slots), cudaMemcpyDeviceToHost, stream));
  REMAT_CUDA_CHECK(cudaStreamSynchronize(stream));
  scan.counted = static_cast<int64_t>(host_slots[0]);
  if (host_slots[1] != 0) {
    scan.bad_position = n - static_cast<int64_t>(host_slots[1]);
    REMAT_CUDA_CHECK(cudaMemcpyAsync(&scan.bad_value, idx + *scan.bad_position, sizeof(int64_t),
                                     cudaMemcpyDeviceToHost, stream));
    REMAT_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  return scan;
}

}  // namespace remat::kernels::cuda
