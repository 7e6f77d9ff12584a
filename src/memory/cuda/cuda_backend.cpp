// Raw CUDA backends for the caching allocator: device memory from cudaMalloc
// (stream-ordered: it also gives the allocator the current stream and events
// from a small pool), and pinned host memory (for offload) from cudaHostAlloc.
#include <cuda_runtime_api.h>

#include <vector>

#include "core/cuda_check.h"
#include "memory/caching_allocator.h"
#include "memory/raw_backend.h"
#include "remat/core/stream.h"

namespace remat::memory {
namespace {

class CudaDeviceBackend final : public RawBackend, public StreamEvents {
 public:
  explicit CudaDeviceBackend(int index) : index_(index) {}
  ~CudaDeviceBackend() override {
    // No checks: at process exit the driver may already be gone.
    for (cudaEvent_t event : free_events_) cudaEventDestroy(event);
  }
  CudaDeviceBackend(const CudaDeviceBackend&) = delete;
  CudaDeviceBackend& operator=(const CudaDeviceBackend&) = delete;

  void* raw_alloc(size_t bytes) override {
    detail::CudaDeviceGuard guard(index_);
    void* ptr = nullptr;
    cudaError_t err = cudaMalloc(&ptr, bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // out of memory is reported by returning null
      return nullptr;
    }
    REMAT_CUDA_CHECK(err);
    return ptr;
  }
  void raw_free(void* ptr, size_t) override {
    detail::CudaDeviceGuard guard(index_);
    REMAT_CUDA_CHECK(cudaFree(ptr));
  }
  Device device() const override { return Device::cuda(index_); }
  const char* name() const override { return "cudaMalloc"; }

  void* current_stream() const override { return remat::current_stream(device()).handle(); }

  // The device must be current: an event belongs to the device it was created
  // on, and the null stream means the current device's default stream.
  void* record_event(void* stream) override {
    detail::CudaDeviceGuard guard(index_);
    cudaEvent_t event = nullptr;
    if (free_events_.empty()) {
      // No timing: such events are cheaper to record and to query.
      REMAT_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    } else {
      event = free_events_.back();
      free_events_.pop_back();
    }
    cudaError_t err = cudaEventRecord(event, static_cast<cudaStream_t>(stream));
    if (err != cudaSuccess) {
      free_events_.push_back(event);
      REMAT_CUDA_CHECK(err);
    }
    return event;
  }
  bool event_done(void* event) override {
    cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (err == cudaErrorNotReady) {
      cudaGetLastError();  // not an error: the work is still running
      return false;
    }
    REMAT_CUDA_CHECK(err);
    return true;
  }
  void synchronize_event(void* event) override {
    REMAT_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  }
  void release_event(void* event) override {
    free_events_.push_back(static_cast<cudaEvent_t>(event));
  }

 private:
  int index_;
  // Recorded events come back here once complete; the allocator's mutex
  // guards the pool, so it needs no lock of its own.
  std::vector<cudaEvent_t> free_events_;
};

class PinnedHostBackend final : public RawBackend {
 public:
  void* raw_alloc(size_t bytes) override {
    void* ptr = nullptr;
    cudaError_t err = cudaHostAlloc(&ptr, bytes, cudaHostAllocDefault);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return nullptr;
    }
    REMAT_CUDA_CHECK(err);
    return ptr;
  }
  void raw_free(void* ptr, size_t) override { REMAT_CUDA_CHECK(cudaFreeHost(ptr)); }
  Device device() const override { return kCPU; }
  const char* name() const override { return "cudaHostAlloc"; }
};

}  // namespace

std::unique_ptr<RawBackend> make_cuda_backend(int device_index) {
  return std::make_unique<CudaDeviceBackend>(device_index);
}

std::unique_ptr<RawBackend> make_pinned_host_backend() {
  return std::make_unique<PinnedHostBackend>();
}

}  // namespace remat::memory
