// Cross-entropy: the kernels every backend implements (kernels/cpu/loss.cpp,
// kernels/cuda/loss.cu), declared once. Logits [N, C, d1...] are viewed as
// N x C x S (S = d1 * ...), targets (int64) as the N * S rows that each pick
// a class. Every operand is contiguous: the op layer makes the inputs so, and
// the kernels check. CUDA computes bfloat16/float16 in float32.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels {

struct LossKernels {
  // loss (0-d) = mean over rows whose target is not ignore_index of
  // lse - logit[target]; lse (targets' shape) gets every row's logsumexp.
  // With every row ignored the mean is 0/0 = NaN, as in PyTorch. The mean is
  // summed in float64 in a fixed order: the same loss on every run. Throws
  // naming the op when a target is outside [0, C) and is not ignore_index
  // (on CUDA this synchronises with the device).
  void (*cross_entropy)(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                        const Tensor& loss, const Tensor& lse);
  // out (logits' shape) = (softmax(logits) - onehot(target)) * grad / count
  // on rows not ignored, 0 on ignored rows; grad is the 0-d incoming
  // gradient, read on its device.
  void (*cross_entropy_backward)(const Tensor& grad, const Tensor& logits, const Tensor& targets,
                                 const Tensor& lse, int64_t ignore_index, const Tensor& out);
};

namespace cpu {
extern const LossKernels loss_kernels;
}
namespace cuda {
extern const LossKernels loss_kernels;
}

}  // namespace remat::kernels
