// nn::Module: the base of every layer. A module owns named parameters (leaf
// tensors that require grad), named buffers (state that is saved but not
// trained, such as BatchNorm's running statistics) and named child modules.
// Names compose into dotted paths ("blocks.0.attn.q_proj.weight"), the keys of
// PyTorch's state_dict, so saved state interchanges with the Python ecosystem.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "remat/core/tensor.h"

namespace remat::nn {

// (dotted name, tensor) pairs in registration order.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  // Parameters are shared handles: a copy would silently alias them.
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The forward of a module with one input and one output. The base throws:
  // containers such as ModuleList have no forward of their own.
  virtual Tensor forward(const Tensor& input);
  Tensor operator()(const Tensor& input) { return forward(input); }

  // Registration. Names are non-empty, contain no '.', and are unique within
  // a module across parameters, buffers and children. A registered parameter
  // is marked requires_grad. The returned handle shares the registered tensor.
  Tensor register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

  // Every parameter once (a tensor registered under two names, e.g. tied
  // weights, is listed under its first name), own before children's.
  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  // Every buffer once, in the same order.
  NamedTensors named_buffers() const;
  // PyTorch's state_dict order: each module's parameters, then its buffers,
  // then its children's; every name, shared tensors included.
  NamedTensors state_dict() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const {
    return children_;
  }
  int64_t num_parameters() const;

  // Training mode (the default) for this module and every descendant:
  // dropout drops, BatchNorm uses and updates batch statistics.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves parameters, buffers and gradients in place: every handle to them
  // (an optimizer's, a layer's member) stays valid and sees the new storage.
  // to(DType) converts floating-point tensors only (integer buffers such as
  // num_batches_tracked keep their dtype), as in PyTorch, except that a
  // module may keep a buffer in another dtype (buffer_dtype: BatchNorm2d's
  // running statistics stay float32 under bfloat16/float16). Not to be
  // called while a backward through the module is pending.
  Module& to(Device device);
  Module& to(DType dtype);

  // Drops the parameters' gradients, or with set_to_none = false zeroes them
  // in place (remat::zero_grad, remat/autograd.h).
  void zero_grad(bool set_to_none = true);

  // The class name ("Linear"), for messages.
  const std::string& type_name() const { return type_name_; }

 protected:
  explicit Module(std::string type_name = "Module") : type_name_(std::move(type_name)) {}
  // The dtype to(dtype) gives this module's own floating-point buffer `name`.
  virtual DType buffer_dtype(const std::string& /*name*/, DType dtype) const { return dtype; }

 private:
  void check_new_name(const std::string& name) const;
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  // Appends this module's parameters and buffers and then its descendants',
  // named from `prefix`; either list may be null (skip) or both the same one.
  void collect_state(const std::string& prefix, NamedTensors* parameters,
                     NamedTensors* buffers) const;
  // The dtype to(dtype) gives each floating-point tensor of this module and
  // its descendants, by tensor.
  void collect_dtypes(DType dtype, std::unordered_map<const TensorImpl*, DType>* out) const;

  std::string type_name_;
  bool training_ = true;
  NamedTensors parameters_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace remat::nn
