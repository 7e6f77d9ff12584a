#include "kernels/cuda/common.cuh"
#include "kernels/cuda/transfer.cuh"

namespace remat::kernels::cuda {

void copy_between_devices(const Tensor& src, const Tensor& dst) {
  REMAT_CHECK(src.is_contiguous() && dst.is_contiguous() && src.dtype() == dst.dtype() &&
                  src.shape() == dst.shape(),
              "copy from {} to {}: needs contiguous tensors of one shape and dtype ({} and {})",
              src.device(), dst.device(), TensorMeta::of(src).str(), TensorMeta::of(dst).str());
  if (src.nbytes() == 0) return;
  // Queued on the device's current stream, behind the kernels that produce
  // src, then waited for: the host side may be pageable memory that is freed
  // or read as soon as this returns. cudaMemcpyDefault: unified addressing
  // tells the direction from the pointers.
  const Tensor& on_device = src.device().is_cuda() ? src : dst;
  DeviceScope scope(on_device);
  const cudaStream_t stream = stream_of(on_device);
  REMAT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(),
                                   static_cast<size_t>(src.nbytes()), cudaMemcpyDefault, stream));
  REMAT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace remat::kernels::cuda
