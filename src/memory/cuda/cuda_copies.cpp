// The offload pool's copy engine on CUDA: copies between a device and pinned
// host memory on a stream of their own, so they overlap the compute stream,
// each behind the compute queued when it was asked for and timed by a pair
// of events.
#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "memory/offload.h"
#include "remat/core/stream.h"

namespace remat::memory {
namespace {

struct CudaCopy {
  cudaEvent_t queued = nullptr;  // on the compute stream, where the copy was asked for
  cudaEvent_t start = nullptr;   // on the copy stream: the copy's timing
  cudaEvent_t end = nullptr;
};

class CudaCopyEngine final : public CopyEngine {
 public:
  explicit CudaCopyEngine(int index)
      : index_(index), stream_(Stream::create(Device::cuda(index))) {}

  void* copy(void* dst, const void* src, int64_t bytes, const Allocation& device_block) override {
    detail::CudaDeviceGuard guard(index_);
    auto copy = std::make_unique<CudaCopy>();
    REMAT_CUDA_CHECK(cudaEventCreateWithFlags(&copy->queued, cudaEventDisableTiming));
    REMAT_CUDA_CHECK(cudaEventCreate(&copy->start));
    REMAT_CUDA_CHECK(cudaEventCreate(&copy->end));
    const auto compute = static_cast<cudaStream_t>(current_stream(Device::cuda(index_)).handle());
    const auto copies = static_cast<cudaStream_t>(stream_.handle());
    // The copy waits for what the compute stream has queued (the kernel that
    // made src, the last reader of dst's block) and no more.
    REMAT_CUDA_CHECK(cudaEventRecord(copy->queued, compute));
    REMAT_CUDA_CHECK(cudaStreamWaitEvent(copies, copy->queued, 0));
    REMAT_CUDA_CHECK(cudaEventRecord(copy->start, copies));
    REMAT_CUDA_CHECK(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDefault, copies));
    REMAT_CUDA_CHECK(cudaEventRecord(copy->end, copies));
    record_stream(device_block, stream_);
    return copy.release();
  }
  bool done(void* handle) override {
    cudaError_t err = cudaEventQuery(static_cast<CudaCopy*>(handle)->end);
    if (err == cudaErrorNotReady) {
      cudaGetLastError();  // still running: not an error
      return false;
    }
    REMAT_CUDA_CHECK(err);
    return true;
  }
  void order_after(void* handle) override {
    detail::CudaDeviceGuard guard(index_);
    const auto compute = static_cast<cudaStream_t>(current_stream(Device::cuda(index_)).handle());
    REMAT_CUDA_CHECK(cudaStreamWaitEvent(compute, static_cast<CudaCopy*>(handle)->end, 0));
  }
  double elapsed_ms(void* handle) override {
    const auto* copy = static_cast<CudaCopy*>(handle);
    float ms = 0;
    REMAT_CUDA_CHECK(cudaEventElapsedTime(&ms, copy->start, copy->end));
    return ms;
  }
  void release(void* handle) override {
    auto* copy = static_cast<CudaCopy*>(handle);
    // No checks: the last copies may be released at process exit.
    cudaEventDestroy(copy->queued);
    cudaEventDestroy(copy->start);
    cudaEventDestroy(copy->end);
    delete copy;
  }

 private:
  int index_;
  Stream stream_;
};

}  // namespace

std::unique_ptr<CopyEngine> make_cuda_copy_engine(int device_index) {
  return std::make_unique<CudaCopyEngine>(device_index);
}

}  // namespace remat::memory
