#include <array>
#include <memory>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"

namespace remat::kernels::cuda {
namespace {

constexpr int kMaxDevices = 64;

// Created on first use per device and thread, destroyed with the thread.
// Destruction errors are ignored: at process exit the driver may be gone.
template <typename Handle, auto Create, auto Destroy>
class PerDevice {
 public:
  ~PerDevice() {
    for (Handle h : handles_) {
      if (h) Destroy(h);
    }
  }
  Handle get(int device, const char* create_call) {
    REMAT_CHECK(device >= 0 && device < kMaxDevices, "{}: device index {} out of range",
                create_call, device);
    Handle& h = handles_[static_cast<size_t>(device)];
    if (!h) create(device, &h);
    return h;
  }

 private:
  static void create(int device, Handle* h);
  std::array<Handle, kMaxDevices> handles_{};
};

template <>
void PerDevice<cublasHandle_t, &cublasCreate_v2, &cublasDestroy_v2>::create(int device,
                                                                            cublasHandle_t* h) {
  detail::CudaDeviceGuard guard(device);
  REMAT_CUBLAS_CHECK(cublasCreate(h));
}

template <>
void PerDevice<cudnnHandle_t, &cudnnCreate, &cudnnDestroy>::create(int device, cudnnHandle_t* h) {
  detail::CudaDeviceGuard guard(device);
  REMAT_CUDNN_CHECK(cudnnCreate(h));
}

}  // namespace

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw Error(fmt::format("cuBLAS error at {}:{}: {} failed: {} ({})", file, line, call,
                          cublasGetStatusName(status), cublasGetStatusString(status)));
}

void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file, int line) {
  throw Error(fmt::format("cuDNN error at {}:{}: {} failed: {}", file, line, call,
                          cudnnGetErrorString(status)));
}

cublasHandle_t cublas_handle(const Tensor& t) {
  thread_local PerDevice<cublasHandle_t, &cublasCreate_v2, &cublasDestroy_v2> handles;
  cublasHandle_t h = handles.get(t.device().index, "cublasCreate");
  REMAT_CUBLAS_CHECK(cublasSetStream(h, stream_of(t)));
  return h;
}

cudnnHandle_t cudnn_handle(const Tensor& t) {
  thread_local PerDevice<cudnnHandle_t, &cudnnCreate, &cudnnDestroy> handles;
  cudnnHandle_t h = handles.get(t.device().index, "cudnnCreate");
  REMAT_CUDNN_CHECK(cudnnSetStream(h, stream_of(t)));
  return h;
}

memory::Allocation workspace(const Tensor& t, size_t bytes) {
  return memory::allocate(t.device(), static_cast<int64_t>(bytes));
}

}  // namespace remat::kernels::cuda
