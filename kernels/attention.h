// Fused scaled dot-product attention: the kernels every backend implements
// (kernels/cpu/attention.cpp, kernels/cuda/attention.cu), declared once.
// FlashAttention-2's algorithm (Dao, 2023): the [Lq, Lk] scores never exist
// whole. The forward walks key tiles with an online softmax and keeps, per
// query row, only the log-sum-exp of its scores; the backward regenerates
// each tile's probabilities from it, with D = rowsum(dO * O) standing in for
// the softmax's row reduction.
#pragma once

#include <cstdint>

#include "kernels/dropout.h"
#include "remat/core/tensor.h"

namespace remat::kernels {

struct AttentionParams {
  double scale = 1.0;  // the scores are scale * q k^T (+ mask)
  // Query i of Lq sees key j of Lk iff j <= i + (Lk - Lq): the last query
  // sees every key (bottom-right alignment, as FlashAttention 2.1+; for Lq ==
  // Lk it is PyTorch's is_causal). A query that sees no key gives NaN.
  bool causal = false;
  // Dropout on the probabilities: element (n, h, i, j) is kept iff
  // dropout_keeps(seed, offset, ((n * H + h) * Lq + i) * Lk + j, p) and then
  // scaled by keep_scale, so dropout(softmax(s)) of the math path draws the
  // same mask from the same stream. The row sums are taken before dropout.
  double dropout_p = 0.0;
  double keep_scale = 1.0;
  uint64_t seed = 0, offset = 0;
};

// Operands are 4-d [N, H, L, E] (the op layer folds other batch shapes):
// q [N, H, Lq, E], k [N, H, Lk, E], v [N, H, Lk, Ev], any strides in the
// first three dims and stride 1 in the last. mask, when defined, is added to
// the scaled scores: [N, H, Lq, Lk], any strides (0 where broadcast), q's
// dtype. Float32, float64, and bfloat16/float16 accumulated in float32.
struct AttentionKernels {
  // out [N, H, Lq, Ev], q's dtype, stride 1 in its last dim (the CUDA
  // kernels: contiguous; the op lays it out [N, Lq, H, Ev] on the CPU); lse
  // [N, H, Lq] contiguous,
  // float64 for float64 operands and float32 otherwise: the natural log of
  // each row's sum of exp(score) (-inf for a row that sees no key).
  void (*forward)(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                  const AttentionParams& params, const Tensor& out, const Tensor& lse);
  // The gradients of q, k and v (contiguous, their shapes and q's dtype)
  // from grad_out and the forward's out and lse (grad_out and out have any
  // strides with stride 1 in the last dim). Deterministic: no atomics, so a
  // checkpoint replay's backward is bitwise the original's.
  void (*backward)(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& mask, const Tensor& out, const Tensor& lse,
                   const AttentionParams& params, const Tensor& grad_q, const Tensor& grad_k,
                   const Tensor& grad_v);
};

namespace cpu {
extern const AttentionKernels attention_kernels;
}
namespace cuda {
extern const AttentionKernels attention_kernels;
}

}  // namespace remat::kernels
