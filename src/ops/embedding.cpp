// Embedding lookup. Backward saves only the indices: the weight's gradient is
// the incoming rows scattered (summed) into a dense [V, D] tensor.
#include "kernels/embedding.h"
#include "ops/dispatch.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

const kernels::EmbeddingKernels& embedding_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::embedding_kernels, REMAT_CUDA_KERNELS(embedding_kernels));
}

}  // namespace

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
    embedding_kernels("embedding", out[0].device())
        .forward(in[0].contiguous(), in[1].contiguous(), out[0]);
  };
  def.compute_reduced_in_float = false;  // rows are copied as bytes
  def.save_inputs = {1};
  def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{
        call1(op<"embedding_backward">(), {a.grad(), a.input(1)},
              EmbeddingBackwardAttrs{.num_weights = a.input_meta[0].shape[0]}),
        Tensor()};
  };
  r.add(std::move(def));

  // grad [..., D], indices [...] -> dense gradient of the weight [num_weights, D].
  OpDef backward;
  backward.name = "embedding_backward";
  backward.attrs = attrs_type<EmbeddingBackwardAttrs>();
  backward.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const Tensor &grad = in[0], &indices = in[1];
    check_floating("embedding_backward", grad);
    check_dtype("embedding_backward", indices, kInt64, "indices");
    REMAT_CHECK_SHAPE(grad.dim() == indices.dim() + 1 &&
                          Shape(grad.shape().begin(), grad.shape().end() - 1) == indices.shape(),
                      "embedding_backward: grad must be indices' shape plus one dim, got {}",
                      describe(in));
    const int64_t num_weights = a.get<EmbeddingBackwardAttrs>().num_weights;
    REMAT_CHECK(num_weights >= 0, "embedding_backward: negative num_weights {}", num_weights);
    return std::vector<TensorMeta>{
        {{num_weights, grad.shape().back()}, grad.dtype(), grad.device()}};
  };
  backward.forward = [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
    embedding_kernels("embedding_backward", out[0].device())
        .backward(in[0].contiguous(), in[1].contiguous(), out[0]);
  };
  r.add(std::move(backward));
}

}  // namespace remat::ops

namespace remat {

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  return ops::call1(ops::op<"embedding">(), {weight, indices});
}

}  // namespace remat
