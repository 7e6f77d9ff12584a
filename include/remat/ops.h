// The differentiable ops. Each records a tape entry when grad mode is on and an
// operand requires grad. Binary ops broadcast like NumPy; operands must share
// dtype and device (a mismatch throws naming the op and both operands).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "remat/core/tensor.h"

namespace remat {

// Elementwise.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor pow(const Tensor& a, double exponent);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
// approximate: "none" (exact, erf) or "tanh".
Tensor gelu(const Tensor& x, const std::string& approximate = "none");

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double s);
Tensor operator-(const Tensor& a, double s);
Tensor operator*(const Tensor& a, double s);
Tensor operator/(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(double s, const Tensor& a);

// Reductions. An empty dims list reduces every dim.
Tensor sum(const Tensor& x);
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
struct MaxResult {
  Tensor values;
  Tensor indices;  // int64
};
MaxResult max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);

// Shapes and views. Views share storage with their input.
Tensor reshape(const Tensor& x, const Shape& shape);  // one dim may be -1
Tensor view(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor contiguous(const Tensor& x);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);

// Linear algebra: a[..., M, K] @ b[..., K, N], batch dims broadcast (>= 2-d operands).
Tensor matmul(const Tensor& a, const Tensor& b);
// a @ b + bias[N] in one op (BLAS adds the bias): a linear layer.
Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& bias);

// Activations and normalisation.
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// Normalises over the trailing dims of weight's shape, else of bias's, else over the last dim.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// Training: batch statistics, and running_mean/var (if defined) updated in
// place with momentum. Eval: the running statistics normalise.
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum = 0.1,
                  double eps = 1e-5);
// Counter-based Philox mask: a pure function of (seed, offset, index).
Tensor dropout(const Tensor& x, double p, bool training = true);
Tensor embedding(const Tensor& weight, const Tensor& indices);

// Losses (mean reduction).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
Tensor mse_loss(const Tensor& pred, const Tensor& target);

// Convolution and pooling, NCHW.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
              std::vector<int64_t> stride = {1, 1}, std::vector<int64_t> padding = {0, 0},
              std::vector<int64_t> dilation = {1, 1}, int64_t groups = 1);
Tensor max_pool2d(const Tensor& x, std::vector<int64_t> kernel, std::vector<int64_t> stride = {},
                  std::vector<int64_t> padding = {0, 0});
Tensor avg_pool2d(const Tensor& x, std::vector<int64_t> kernel, std::vector<int64_t> stride = {},
                  std::vector<int64_t> padding = {0, 0});
Tensor adaptive_avg_pool2d(const Tensor& x, std::vector<int64_t> output_size);

// Attention: q [..., Lq, E], k [..., Lk, E], v [..., Lk, Ev] (batch dims
// broadcast) give dropout(softmax(scale * q k^T + mask)) v, [..., Lq, Ev]
// (docs/attention.md).
enum class AttentionImpl {
  // One op in O(L) memory (FlashAttention-2): it saves q, k, v, the output
  // and each row's log-sum-exp, and its backward regenerates the
  // probabilities tile by tile. The mask gets no gradient.
  Fused,
  // The composition matmul, softmax, dropout, matmul: saves the [Lq, Lk]
  // probabilities, and a mask that requires grad gets its gradient.
  Math,
};
struct AttentionOptions {
  // Query i sees key j iff j <= i + (Lk - Lq): the last query sees every key
  // (bottom-right aligned; for Lq == Lk, PyTorch's is_causal). A query that
  // sees no key gives NaN.
  bool causal = false;
  // Added to the scaled scores, broadcast to [..., Lq, Lk]: q's dtype, or
  // bool (true: attend; false: -inf).
  Tensor mask;
  double dropout_p = 0;         // on the probabilities; the same mask for both impls
  std::optional<double> scale;  // default 1 / sqrt(E)
  AttentionImpl impl = AttentionImpl::Fused;
};
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options);
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    bool causal = false);

}  // namespace remat
