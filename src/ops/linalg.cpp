// Matrix products: matmul's operands are (a, b, bias), the bias possibly
// undefined; with one, the op is a linear layer's whole affine map, so a
// checkpoint policy that keeps matmul outputs keeps the biased result.
#include "kernels/gemm.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

// dB = A^T dC in B's own layout. A linear layer multiplies by its weight's
// transpose, a column-major view: dB is then formed as (dC^T A)^T, whose
// transpose (the weight's gradient) is contiguous, where A^T dC would hand
// the weight a transposed gradient that every accumulation and optimizer
// pass walks across the grain (PyTorch's mm_mat2_backward does the same).
Tensor matmul_grad_b(const Tensor& a, const Tensor& b, const Tensor& grad, const Shape& b_shape) {
  const bool column_major = a.dim() == 2 && b.dim() == 2 && b.strides()[0] == 1 &&
                            b.strides()[1] == b.shape()[0] && b.shape()[1] > 1;
  if (column_major) return matmul(grad.transpose(0, 1), a).transpose(0, 1);
  return sum_to(matmul(a.transpose(-1, -2), grad), b_shape);
}

}  // namespace

void register_linalg_ops(Registry& r) {
  OpDef def;
  def.name = "matmul";
  def.shape = [](const std::vector<Tensor>& in, const Attrs&) {
    REMAT_CHECK(in.size() == 3,
                "matmul: expected (a, b, bias), bias possibly undefined, got {} operands",
                in.size());
    const Tensor &a = in[0], &b = in[1], &bias = in[2];
    check_same_dtype("matmul", a, b);
    REMAT_CHECK_SHAPE(a.dim() >= 2 && b.dim() >= 2,
                      "matmul: operands must be at least 2-d, got {} and {}", shape_str(a.shape()),
                      shape_str(b.shape()));
    REMAT_CHECK_SHAPE(a.shape().back() == b.shape()[static_cast<size_t>(b.dim() - 2)],
                      "matmul: inner dims differ: {} @ {}", shape_str(a.shape()),
                      shape_str(b.shape()));
    Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                   Shape(b.shape().begin(), b.shape().end() - 2), "matmul");
    batch.push_back(a.shape()[static_cast<size_t>(a.dim() - 2)]);
    batch.push_back(b.shape().back());
    if (bias.defined()) {
      check_same_dtype("matmul", a, bias);
      REMAT_CHECK_SHAPE(bias.shape() == Shape{b.shape().back()},
                        "matmul: bias must be [{}] for {} @ {}, got {}", b.shape().back(),
                        shape_str(a.shape()), shape_str(b.shape()), shape_str(bias.shape()));
    }
    return std::vector<TensorMeta>{{batch, a.dtype(), a.device()}};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
    kernels_for("matmul", out[0].device(), kernels::cpu::gemm_kernels,
                REMAT_CUDA_KERNELS(gemm_kernels))
        .matmul(in[0], in[1], in[2], out[0]);
  };
  def.save_inputs = {0, 1};
  def.compute_reduced_in_float = false;  // the CPU kernel takes 16-bit operands itself
  // dA = dC B^T, dB = A^T dC, each summed over broadcast batch dims; dbias
  // sums dC over every dim but the last.
  def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{
        a.needs(0) ? sum_to(matmul(a.grad(), a.input(1).transpose(-1, -2)), a.input_meta[0].shape)
                   : Tensor(),
        a.needs(1) ? matmul_grad_b(a.input(0), a.input(1), a.grad(), a.input_meta[1].shape)
                   : Tensor(),
        a.needs(2) ? sum_to(a.grad(), a.input_meta[2].shape) : Tensor()};
  };
  r.add(std::move(def));
}

}  // namespace remat::ops

namespace remat {
Tensor matmul(const Tensor& a, const Tensor& b) {
  return ops::call1(ops::op<"matmul">(), {a, b, Tensor()});
}
Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& bias) {
  return ops::call1(ops::op<"matmul">(), {a, b, bias});
}
}  // namespace remat
