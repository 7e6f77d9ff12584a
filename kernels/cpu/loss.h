// Cross-entropy on the CPU. Logits [N, C, d1...] are viewed as N x C x S
// (S = d1 * ...), targets (int64) as the N * S rows that each pick a class.
#pragma once

#include <cstdint>

#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

// loss (0-d) = mean over rows whose target is not ignore_index of
// lse - logit[target]; lse (targets' shape) gets every row's logsumexp. With
// every row ignored the mean is 0/0 = NaN, as in PyTorch. Throws naming the op
// when a target is outside [0, C) and is not ignore_index.
void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                   const Tensor& loss, const Tensor& lse);
// out (logits' shape) = (softmax(logits) - onehot(target)) * grad / count on
// rows not ignored, 0 on ignored rows; grad is the 0-d incoming gradient.
void cross_entropy_backward(const Tensor& grad, const Tensor& logits, const Tensor& targets,
                            const Tensor& lse, int64_t ignore_index, const Tensor& out);

}  // namespace remat::kernels::cpu
