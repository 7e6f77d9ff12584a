// Embedding lookup. Backward saves only the indices: the weight's gradient is
// the incoming rows scattered (summed) into a dense [V, D] tensor.
#include "kernels/cpu/embedding.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

#if defined(REMAT_WITH_CUDA)
#include "kernels/cuda/embedding.cuh"
#endif

namespace remat::ops {

void register_embedding_ops(Registry& r) {
  OpDef def;
  def.name = "embedding";
  def.shape = [](const std::vector<Tensor>& in, const Attrs&) {
    const Tensor &weight = in[0], &indices = in[1];
    check_floating("embedding", weight);
    check_dtype("embedding", indices, kInt64, "indices");
    REMAT_CHECK_SHAPE(weight.dim() == 2, "embedding: weight must be 2-d [V, D], got {}",
                      describe(in));
    Shape out = indices.shape();
    out.push_back(weight.shape()[1]);
    return std::vector<TensorMeta>{{out, weight.dtype(), weight.device()}};
  };
  def.forward = [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
    on_device(
        "embedding", out[0].device(), [&] { kernels::cpu::embedding(in[0], in[1], out[0]); },
        REMAT_CUDA_KERNEL(kernels::cuda::embedding(in[0], in[1], out[0])));
  };
  def.compute_reduced_in_float = false;  // rows are copied as bytes
  def.save_inputs = {1};
  def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{call1(op<"embedding_backward">(), {a.grad(), a.input(1)},
                                     {{"num_weights", a.input_meta[0].shape[0]}}),
                               Tensor()};
  };
  r.add(std::move(def));

  // grad [..., D], indices [...] -> dense gradient of the weight [num_weights, D].
  OpDef backward;
  backward.name = "embedding_backward";
  backward.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const Tensor &grad = in[0], &indices = in[1];
    check_floating("embedding_backward", grad);
    check_dtype("embedding_backward", indices, kInt64, "indices");
    REMAT_CHECK_SHAPE(grad.dim() == indices.dim() + 1 &&
                          Shape(grad.shape().begin(), grad.shape().end() - 1) == indices.shape(),
                      "embedding_backward: grad must be indices' shape plus one dim, got {}",
                      describe(in));
    REMAT_CHECK(a.i("num_weights") >= 0, "embedding_backward: negative num_weights {}",
                a.i("num_weights"));
    return std::vector<TensorMeta>{
        {{a.i("num_weights"), grad.shape().back()}, grad.dtype(), grad.device()}};
  };
  backward.forward = [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
    on_device(
        "embedding_backward", out[0].device(),
        [&] { kernels::cpu::embedding_backward(in[0], in[1], out[0]); },
        REMAT_CUDA_KERNEL(kernels::cuda::embedding_backward(in[0], in[1], out[0])));
  };
  r.add(std::move(backward));
}

}  // namespace remat::ops

namespace remat {

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  return ops::call1(ops::op<"embedding">(), {weight, indices});
}

}  // namespace remat
