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

}  // namespace remat::detail

#define REMAT_CUDA_CHECK(call)                                                       \
  do {                                                                               \
    cudaError_t remat_cuda_err_ = (call);                                            \
    if (remat_cuda_err_ != cudaSuccess) {                                            \
      ::remat::detail::throw_cuda_error(remat_cuda_err_, #call, __FILE__, __LINE__); \
    }                                                                                \
  } while (0)
