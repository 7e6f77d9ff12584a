// cuBLAS and cuDNN: checked calls, per-device handles bound to the current
// stream, and workspace from the caching allocator. Include from .cu files.
#pragma once

#include <cublas_v2.h>
#include <cudnn.h>

#include "remat/core/tensor.h"
#include "remat/memory/memory.h"

namespace remat::kernels::cuda {

[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                     int line);
[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file,
                                    int line);

// The cuBLAS handle of t's device, set to the thread's current stream. One
// handle per device and thread (cuBLAS handles are not thread-safe).
cublasHandle_t cublas_handle(const Tensor& t);
// The cuDNN handle of t's device, set to the thread's current stream.
cudnnHandle_t cudnn_handle(const Tensor& t);

// Scratch memory for a library call on t's device, from the caching allocator
// (so it is counted in the statistics); returned when the Allocation dies.
// Kernels on one stream run in order, so the block may be reused by the next
// call on the same stream at once.
memory::Allocation workspace(const Tensor& t, size_t bytes);

}  // namespace remat::kernels::cuda

#define REMAT_CUBLAS_CHECK(call)                                                                   \
  do {                                                                                             \
    cublasStatus_t remat_cublas_status_ = (call);                                                  \
    if (remat_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                           \
      ::remat::kernels::cuda::throw_cublas_error(remat_cublas_status_, #call, __FILE__, __LINE__); \
    }                                                                                              \
  } while (0)

#define REMAT_CUDNN_CHECK(call)                                                                  \
  do {                                                                                           \
    cudnnStatus_t remat_cudnn_status_ = (call);                                                  \
    if (remat_cudnn_status_ != CUDNN_STATUS_SUCCESS) {                                           \
      ::remat::kernels::cuda::throw_cudnn_error(remat_cudnn_status_, #call, __FILE__, __LINE__); \
    }                                                                                            \
  } while (0)
