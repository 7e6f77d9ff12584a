// Cross-entropy on the GPU, with the CPU kernel's contract (kernels/cpu/loss.h):
// logits [N, C, d1...] viewed as N x C x S, targets (int64) as the N * S rows
// that each pick a class. Any floating dtype; 16-bit ones computed in float32.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels::cuda {

// loss (0-d) = mean over rows whose target is not ignore_index of
// lse - logit[target]; lse (targets' shape, contiguous) gets every row's
// logsumexp. With every row ignored the mean is 0/0 = NaN. Throws naming the
// op when a target is outside [0, C) and is not ignore_index (which
// synchronises with the device). The mean is summed in float64 in a fixed
// order: the same loss on every run.
void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                   const Tensor& loss, const Tensor& lse);
// out (logits' shape, contiguous) = (softmax(logits) - onehot(target)) * grad /
// count on rows not ignored, 0 on ignored rows; grad is the 0-d incoming
// gradient, read on the device.
void cross_entropy_backward(const Tensor& grad, const Tensor& logits, const Tensor& targets,
                            const Tensor& lse, int64_t ignore_index, const Tensor& out);

}  // namespace remat::kernels::cuda
