// Checks a CUDA runtime call; a failure throws remat::Error naming the call,
// file:line and CUDA's error string. Internal to the library (CUDA builds).
#pragma once

#include <cuda_runtime_api.h>

#include "remat/core/error.h"

namespace remat::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file,
                                          int line) {
  cudaGetLastError();  // clear a non-sticky error so the library keeps working
  throw Error(fmt::format("CUDA error at {}:{}: {} failed: {} ({})", file, line, call,
                          cudaGetErrorName(err), cudaGetErrorString(err)));
}

// Makes `device` current for its scope, restoring the previous one after.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device) {
    cudaError_t err = cudaGetDevice(&previous_);
    if (err != cudaSuccess) throw_cuda_error(err, "cudaGetDevice", __FILE__, __LINE__);
    if (previous_ != device) {
      err = cudaSetDevice(device);
      if (err != cudaSuccess) throw_cuda_error(err, "cudaSetDevice", __FILE__, __LINE__);
    }
  }
  ~CudaDeviceGuard() { cudaSetDevice(previous_); }
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace remat::detail

#define REMAT_CUDA_CHECK(call)                                                       \
  do {                                                                               \
    cudaError_t remat_cuda_err_ = (call);                                            \
    if (remat_cuda_err_ != cudaSuccess) {                                            \
      ::remat::detail::throw_cuda_error(remat_cuda_err_, #call, __FILE__, __LINE__); \
    }                                                                                \
  } while (0)
