// Raw CUDA backends for the caching allocator: device memory from cudaMalloc,
// and pinned host memory (for offload) from cudaHostAlloc.
#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "memory/raw_backend.h"

namespace remat::memory {
namespace {

class CudaDeviceBackend final : public RawBackend {
 public:
  explicit CudaDeviceBackend(int index) : index_(index) {}
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

 private:
  int index_;
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
