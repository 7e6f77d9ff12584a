// Dropout on the GPU (contract: kernels/dropout.h): for the same seed and
// offset the kept elements are exactly those the CPU kernel keeps.
#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/dropout.h"

namespace remat::kernels::cuda {
namespace {

// Stream position offset + i is lane (offset + i) % 4 of Philox block
// (offset + i) / 4. As on the CPU, each thread evaluates one block and serves
// its (up to) four elements.
template <typename D>
__global__ void dropout_kernel(const D* in, D* out, int64_t n, float p, acc_t<D> scale,
                               uint64_t seed, uint64_t offset, int64_t first_block,
                               int64_t blocks) {
  REMAT_GRID_STRIDE_LOOP(b, blocks) {
    const auto block = static_cast<uint64_t>(first_block + b);
    const Philox4 draws = philox(seed, block);
#pragma unroll
    for (uint64_t lane = 0; lane < 4; ++lane) {
      const uint64_t position = block * 4 + lane;
      if (position < offset || position >= offset + static_cast<uint64_t>(n)) continue;
      const auto i = static_cast<int64_t>(position - offset);
      out[i] = dropout_keeps_bits(draws.v[lane], p) ? from_acc<D>(to_acc(in[i]) * scale)
                                                    : from_acc<D>(acc_t<D>(0));
    }
  }
}

void dropout(const Tensor& x, double p, double scale, uint64_t seed, uint64_t offset,
             const Tensor& out) {
  check_contiguous("dropout", {x, out});
  const int64_t n = out.numel();
  if (n == 0) return;
  const auto first_block = static_cast<int64_t>(offset / 4);
  const int64_t blocks = static_cast<int64_t>((offset + n - 1) / 4) - first_block + 1;
  DeviceScope scope(out);
  visit_floating(out.dtype(), "dropout", [&]<typename D>() {
    dropout_kernel<D><<<blocks_for(blocks), kThreads, 0, stream_of(out)>>>(
        static_cast<const D*>(x.data_ptr()), static_cast<D*>(out.data_ptr()), n,
        static_cast<float>(p), static_cast<acc_t<D>>(scale), seed, offset, first_block, blocks);
  });
  REMAT_CUDA_LAUNCH_CHECK("dropout_kernel");
}

}  // namespace

const DropoutKernels dropout_kernels{dropout};

}  // namespace remat::kernels::cuda
