// Matrix products.
#include "kernels/cpu/gemm.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {

void register_linalg_ops(Registry& r) {
  OpDef def;
  def.name = "matmul";
  def.shape = [](const std::vector<Tensor>& in, const Attrs&) {
    const Tensor &a = in[0], &b = in[1];
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
    return std::vector<TensorMeta>{{batch, a.dtype(), a.device()}};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
    on_device("matmul", out[0].device(), [&] { kernels::cpu::matmul(in[0], in[1], out[0]); });
  };
  def.save_inputs = {0, 1};
  // dA = dC B^T, dB = A^T dC, each summed over broadcast batch dims.
  def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{
        a.needs(0) ? sum_to(matmul(a.grad(), a.input(1).transpose(-1, -2)), a.input_meta[0].shape)
                   : Tensor(),
        a.needs(1) ? sum_to(matmul(a.input(0).transpose(-1, -2), a.grad()), a.input_meta[1].shape)
                   : Tensor()};
  };
  r.add(std::move(def));
}

}  // namespace remat::ops

namespace remat {
Tensor matmul(const Tensor& a, const Tensor& b) { return ops::call1(ops::op("matmul"), {a, b}); }
}  // namespace remat
