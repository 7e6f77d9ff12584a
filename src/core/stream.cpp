#include "remat/core/stream.h"

#include <array>

#include "remat/core/error.h"

#if defined(REMAT_WITH_CUDA)
#include "core/cuda_check.h"
#endif

namespace remat {
namespace {

constexpr int kMaxDevices = 64;

void check_cuda_device(Device device, const char* what) {
  REMAT_CHECK(device.is_cuda() && device.index >= 0 && device.index < kMaxDevices,
              "{}: streams exist on CUDA devices only, got {}", what, device);
}

std::array<void*, kMaxDevices>& current_handles() {
  thread_local std::array<void*, kMaxDevices> handles{};  // nullptr: the default stream
  return handles;
}

}  // namespace

Stream Stream::create(Device device) {
  check_cuda_device(device, "Stream::create");
#if defined(REMAT_WITH_CUDA)
  int previous = 0;
  REMAT_CUDA_CHECK(cudaGetDevice(&previous));
  REMAT_CUDA_CHECK(cudaSetDevice(device.index));
  cudaStream_t stream = nullptr;
  cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  cudaSetDevice(previous);
  REMAT_CUDA_CHECK(err);
  return Stream(device, stream);
#else
  throw Error(fmt::format("Stream::create({}): remat was built without CUDA", device));
#endif
}

void Stream::synchronize() const {
#if defined(REMAT_WITH_CUDA)
  REMAT_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)));
#else
  throw Error(fmt::format("Stream::synchronize on {}: remat was built without CUDA", device_));
#endif
}

Stream current_stream(Device device) {
  check_cuda_device(device, "current_stream");
  return Stream::from_handle(device, current_handles()[static_cast<size_t>(device.index)]);
}

void set_current_stream(const Stream& stream) {
  check_cuda_device(stream.device(), "set_current_stream");
  current_handles()[static_cast<size_t>(stream.device().index)] = stream.handle();
}

StreamGuard::StreamGuard(const Stream& stream) : previous_(current_stream(stream.device())) {
  set_current_stream(stream);
}

StreamGuard::~StreamGuard() { set_current_stream(previous_); }

}  // namespace remat
