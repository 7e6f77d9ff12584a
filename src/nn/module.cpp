#include "remat/nn/module.h"

#include <functional>
#include <unordered_set>

#include "remat/autograd.h"
#include "remat/core/grad_mode.h"

namespace remat::nn {
namespace {

// The first entry of each tensor: tied weights registered under two names
// must be counted, moved and updated once.
NamedTensors unique_tensors(const NamedTensors& all) {
  NamedTensors out;
  std::unordered_set<const TensorImpl*> seen;
  for (const auto& [name, t] : all) {
    if (seen.insert(&t.impl()).second) out.emplace_back(name, t);
  }
  return out;
}

// Points `handle` at `value`'s storage and metadata. The impl itself stays, so
// every copy of the handle (and the autograd identity: requires_grad) follows.
void assign_contents(const Tensor& handle, const Tensor& value) {
  TensorImpl& dst = handle.impl();
  const TensorImpl& src = value.impl();
  dst.storage = src.storage;
  dst.offset = src.offset;
  dst.shape = src.shape;
  dst.strides = src.strides;
  dst.dtype = src.dtype;
  dst.device = src.device;
}

// convert(state tensor, value) gives the new value of a parameter, buffer or
// gradient (a gradient's state tensor is its parameter).
void convert_state(const Module& module,
                   const std::function<Tensor(const Tensor&, const Tensor&)>& convert) {
  NoGradGuard no_grad;
  for (const auto& [name, t] : unique_tensors(module.state_dict())) {
    const Tensor grad = t.grad().defined() ? convert(t, t.grad()) : Tensor();
    assign_contents(t, convert(t, t.detach()));
    if (grad.defined()) t.set_grad(grad);
  }
}

}  // namespace

Tensor Module::forward(const Tensor& /*input*/) {
  throw Error(fmt::format("{} has no single-input forward(); call its children", type_name_));
}

void Module::check_new_name(const std::string& name) const {
  REMAT_CHECK(!name.empty() && name.find('.') == std::string::npos,
              "{}: invalid name '{}': names are non-empty and contain no '.'", type_name_, name);
  auto taken = [&name](const auto& entries) {
    for (const auto& entry : entries) {
      if (entry.first == name) return true;
    }
    return false;
  };
  REMAT_CHECK(!taken(parameters_) && !taken(buffers_) && !taken(children_),
              "{}: the name '{}' is already registered", type_name_, name);
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  check_new_name(name);
  REMAT_CHECK(value.defined() && value.is_leaf() && is_floating(value.dtype()),
              "{}: parameter '{}' must be a defined floating-point leaf tensor", type_name_, name);
  value.requires_grad_();
  parameters_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  check_new_name(name);
  REMAT_CHECK(value.defined() && !value.requires_grad(),
              "{}: buffer '{}' must be a defined tensor that does not require grad", type_name_,
              name);
  buffers_.emplace_back(name, value);
  return value;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name);
  REMAT_CHECK(module != nullptr, "{}: child module '{}' is null", type_name_, name);
  children_.emplace_back(name, std::move(module));
}

void Module::collect_state(const std::string& prefix, NamedTensors* parameters,
                           NamedTensors* buffers) const {
  auto append = [&prefix](const NamedTensors& own, NamedTensors* out) {
    if (out == nullptr) return;
    for (const auto& [name, t] : own) out->emplace_back(prefix + name, t);
  };
  append(parameters_, parameters);
  append(buffers_, buffers);
  for (const auto& [name, child] : children_) {
    child->collect_state(prefix + name + ".", parameters, buffers);
  }
}

NamedTensors Module::named_parameters() const {
  NamedTensors all;
  collect_state("", &all, nullptr);
  return unique_tensors(all);
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors all;
  collect_state("", nullptr, &all);
  return unique_tensors(all);
}

NamedTensors Module::state_dict() const {
  NamedTensors all;
  collect_state("", &all, &all);
  return all;
}

int64_t Module::num_parameters() const {
  int64_t count = 0;
  for (const auto& [name, t] : named_parameters()) count += t.numel();
  return count;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

Module& Module::to(Device device) {
  convert_state(*this, [device](const Tensor&, const Tensor& value) { return value.to(device); });
  return *this;
}

void Module::collect_dtypes(DType dtype, std::unordered_map<const TensorImpl*, DType>* out) const {
  for (const auto& [name, p] : parameters_) out->emplace(&p.impl(), dtype);
  for (const auto& [name, b] : buffers_) out->emplace(&b.impl(), buffer_dtype(name, dtype));
  for (const auto& [name, child] : children_) child->collect_dtypes(dtype, out);
}

Module& Module::to(DType dtype) {
  std::unordered_map<const TensorImpl*, DType> targets;
  collect_dtypes(dtype, &targets);
  convert_state(*this, [&targets](const Tensor& state, const Tensor& value) {
    return is_floating(value.dtype()) ? value.to(targets.at(&state.impl())) : value;
  });
  return *this;
}

void Module::zero_grad(bool set_to_none) {
  for (const Tensor& p : parameters()) remat::zero_grad(p, set_to_none);
}

}  // namespace remat::nn
