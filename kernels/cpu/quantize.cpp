// Block quantization on the CPU (contract: kernels/quantize.h): the blocks
// are independent, so they split over the threads and each is computed in
// one fixed order.
#include "kernels/quantize.h"

#include <algorithm>

#include "kernels/contiguous.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

// Blocks per parallel task: enough elements that a task outweighs its
// scheduling.
constexpr int64_t kBlocksPerTask = kParallelGrain / kQuantBlock;

// fn(begin, end) for each block's element range [begin, end) of n elements,
// with scale index begin / kQuantBlock, split over the threads.
template <typename Fn>
void for_each_block(int64_t n, Fn&& fn) {
  const int64_t blocks = quant_block_count(n);
  const int64_t tasks = (blocks + kBlocksPerTask - 1) / kBlocksPerTask;
  parallel_for(tasks, tasks > 1, [&](int64_t t) {
    const int64_t last = std::min(blocks, (t + 1) * kBlocksPerTask);
    for (int64_t b = t * kBlocksPerTask; b < last; ++b) {
      fn(b * kQuantBlock, std::min(n, (b + 1) * kQuantBlock));
    }
  });
}

void quantize_blocks(const Tensor& src, const Tensor& codes, const Tensor& scales,
                     QuantZeros zeros) {
  check_contiguous("quantize_blocks", {src, codes, scales});
  visit_all_floating(src.dtype(), "quantize_blocks", [&]<typename Src>() {
    visit_quant_format(codes.dtype(), "CPU", "quantize_blocks", [&]<typename Code>() {
      const Src* x = static_cast<const Src*>(src.data_ptr());
      Code* c = static_cast<Code*>(codes.data_ptr());
      float* s = quant::kScaled<Code> ? static_cast<float*>(scales.data_ptr()) : nullptr;
      for_each_block(src.numel(), [&](int64_t begin, int64_t end) {
        float scale = 0;
        if constexpr (quant::kScaled<Code>) {
          float amax = 0;
          for (int64_t i = begin; i < end; ++i) {
            amax = quant::amax_step(amax, static_cast<float>(x[i]));
          }
          scale = quant::scale_of<Code>(amax);
          s[begin / kQuantBlock] = scale;
        }
        for (int64_t i = begin; i < end; ++i) {
          c[i] = quant::encode<Code>(static_cast<float>(x[i]), scale, zeros);
        }
      });
    });
  });
}

void dequantize_blocks(const Tensor& codes, const Tensor& scales, const Tensor& dst) {
  check_contiguous("dequantize_blocks", {codes, scales, dst});
  visit_quant_format(codes.dtype(), "CPU", "dequantize_blocks", [&]<typename Code>() {
    visit_all_floating(dst.dtype(), "dequantize_blocks", [&]<typename Dst>() {
      const Code* c = static_cast<const Code*>(codes.data_ptr());
      const float* s =
          quant::kScaled<Code> ? static_cast<const float*>(scales.data_ptr()) : nullptr;
      Dst* y = static_cast<Dst*>(dst.data_ptr());
      for_each_block(dst.numel(), [&](int64_t begin, int64_t end) {
        const float scale = quant::kScaled<Code> ? s[begin / kQuantBlock] : 1.0f;
        for (int64_t i = begin; i < end; ++i) y[i] = quant::decode<Dst>(c[i], scale);
      });
    });
  });
}

}  // namespace

const QuantizeKernels quantize_kernels{quantize_blocks, dequantize_blocks};

}  // namespace remat::kernels::cpu
