// Block quantization on the GPU (contract: kernels/quantize.h): one thread
// block of kQuantBlock threads per quantization block, which reduces the
// block's amax and writes its codes. The per-element rules are the CPU's
// (kernels/quantize.h), and a max does not depend on its order, so both
// devices agree bit for bit.
#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/quantize.h"

namespace remat::kernels::cuda {
namespace {

static_assert(kQuantBlock == kThreads, "one thread per element of a block");

template <typename Src, typename Code>
__global__ void quantize_kernel(const Src* x, Code* codes, float* scales, int64_t n, int64_t blocks,
                                QuantZeros zeros) {
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t i = b * kQuantBlock + threadIdx.x;
    const float v = i < n ? static_cast<float>(x[i]) : 0.0f;
    float scale = 0;
    if constexpr (quant::kScaled<Code>) {
      const float amax = group_reduce(
          quant::amax_step(0.0f, v), [](float a, float b) { return quant::amax_step(a, b); }, 0.0f);
      scale = quant::scale_of<Code>(amax);
      if (threadIdx.x == 0) scales[b] = scale;
    }
    if (i < n) codes[i] = quant::encode<Code>(v, scale, zeros);
  }
}

template <typename Code, typename Dst>
__global__ void dequantize_kernel(const Code* codes, const float* scales, Dst* y, int64_t n) {
  REMAT_GRID_STRIDE_LOOP(i, n) {
    const float scale = quant::kScaled<Code> ? scales[i / kQuantBlock] : 1.0f;
    y[i] = quant::decode<Dst>(codes[i], scale);
  }
}

void quantize_blocks(const Tensor& src, const Tensor& codes, const Tensor& scales,
                     QuantZeros zeros) {
  check_contiguous("quantize_blocks", {src, codes, scales});
  const int64_t n = src.numel();
  if (n == 0) return;
  DeviceScope scope(src);
  visit_floating(src.dtype(), "quantize_blocks", [&]<typename Src>() {
    visit_quant_format(codes.dtype(), "CUDA", "quantize_blocks", [&]<typename Code>() {
      quantize_kernel<Src, Code><<<blocks_for(n), kThreads, 0, stream_of(src)>>>(
          static_cast<const Src*>(src.data_ptr()), static_cast<Code*>(codes.data_ptr()),
          quant::kScaled<Code> ? static_cast<float*>(scales.data_ptr()) : nullptr, n,
          quant_block_count(n), zeros);
    });
  });
  REMAT_CUDA_LAUNCH_CHECK("quantize_kernel");
}

void dequantize_blocks(const Tensor& codes, const Tensor& scales, const Tensor& dst) {
  check_contiguous("dequantize_blocks", {codes, scales, dst});
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceScope scope(dst);
  visit_quant_format(codes.dtype(), "CUDA", "dequantize_blocks", [&]<typename Code>() {
    visit_floating(dst.dtype(), "dequantize_blocks", [&]<typename Dst>() {
      dequantize_kernel<Code, Dst><<<blocks_for(n), kThreads, 0, stream_of(dst)>>>(
          static_cast<const Code*>(codes.data_ptr()),
          quant::kScaled<Code> ? static_cast<const float*>(scales.data_ptr()) : nullptr,
          static_cast<Dst*>(dst.data_ptr()), n);
    });
  });
  REMAT_CUDA_LAUNCH_CHECK("dequantize_kernel");
}

}  // namespace

const QuantizeKernels quantize_kernels{quantize_blocks, dequantize_blocks};

}  // namespace remat::kernels::cuda
