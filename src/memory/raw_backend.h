// The raw memory a caching allocator sits on: host memory, cudaMalloc, pinned
// host memory. A backend only obtains and returns segments; caching, rounding,
// splitting and statistics live in CachingAllocator.
#pragma once

#include <cstddef>
#include <memory>

#include "remat/core/device.h"

namespace remat::memory {

class RawBackend {
 public:
  virtual ~RawBackend() = default;
  // Returns nullptr when the memory is not there (the allocator then frees its
  // cache and retries before reporting out of memory).
  virtual void* raw_alloc(size_t bytes) = 0;
  virtual void raw_free(void* ptr, size_t bytes) = 0;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;
};

// Aligned host memory (64-byte alignment, for SIMD and cache lines).
std::unique_ptr<RawBackend> make_cpu_backend();

#if defined(REMAT_WITH_CUDA)
// cudaMalloc on one device; pinned host memory (for offload). CUDA builds only.
std::unique_ptr<RawBackend> make_cuda_backend(int device_index);
std::unique_ptr<RawBackend> make_pinned_host_backend();
#endif

}  // namespace remat::memory
