#include "remat/core/device.h"
#include "remat/core/error.h"

#if defined(REMAT_WITH_CUDA)
#include "core/cuda_check.h"
#endif

namespace remat {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index);
}

int cuda_device_count() {
#if defined(REMAT_WITH_CUDA)
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

bool cuda_is_available() { return cuda_device_count() > 0; }

void synchronize(Device device) {
  if (device.is_cpu()) return;
#if defined(REMAT_WITH_CUDA)
  REMAT_CUDA_CHECK(cudaSetDevice(device.index));
  REMAT_CUDA_CHECK(cudaDeviceSynchronize());
#else
  throw Error(fmt::format("synchronize({}): remat was built without CUDA", device));
#endif
}

}  // namespace remat
