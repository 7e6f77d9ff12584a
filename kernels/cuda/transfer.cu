#include "core/cuda_check.h"
#include "kernels/cuda/transfer.cuh"

namespace remat::kernels::cuda {

void copy_between_devices(const Tensor& src, const Tensor& dst) {
  REMAT_CHECK(src.is_contiguous() && dst.is_contiguous() && src.dtype() == dst.dtype() &&
                  src.shape() == dst.shape(),
              "copy from {} to {}: needs contiguous tensors of one shape and dtype ({} and {})",
              src.device(), dst.device(), TensorMeta::of(src).str(), TensorMeta::of(dst).str());
  if (src.nbytes() == 0) return;
  // cudaMemcpyDefault: unified addressing tells the direction from the pointers.
  REMAT_CUDA_CHECK(cudaMemcpy(dst.data_ptr(), src.data_ptr(), static_cast<size_t>(src.nbytes()),
                              cudaMemcpyDefault));
}

}  // namespace remat::kernels::cuda
