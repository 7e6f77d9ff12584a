#include "remat/nn/containers.h"

namespace remat::nn {

ModuleList::ModuleList(std::vector<std::shared_ptr<Module>> modules)
    : ModuleList("ModuleList", std::move(modules)) {}

ModuleList::ModuleList(std::string type_name, std::vector<std::shared_ptr<Module>> modules)
    : Module(std::move(type_name)) {
  for (auto& module : modules) push_back(std::move(module));
}

void ModuleList::push_back(std::shared_ptr<Module> module) {
  register_module(std::to_string(modules_.size()), module);
  modules_.push_back(std::move(module));
}

const std::shared_ptr<Module>& ModuleList::operator[](size_t index) const {
  REMAT_CHECK(index < modules_.size(), "{}: index {} out of range for {} modules", type_name(),
              index, modules_.size());
  return modules_[index];
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules)
    : ModuleList("Sequential", std::move(modules)) {}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (const auto& module : *this) h = module->forward(h);
  return h;
}

std::vector<std::function<Tensor(const Tensor&)>> Sequential::functions() const {
  std::vector<std::function<Tensor(const Tensor&)>> fns;
  for (const auto& module : *this) {
    fns.emplace_back([module](const Tensor& x) { return module->forward(x); });
  }
  return fns;
}

}  // namespace remat::nn

namespace remat {

Tensor checkpoint_sequential(const nn::Sequential& seq, int segments, const Tensor& x,
                             CheckpointOptions opts, bool checkpoint_last) {
  return checkpoint_sequential(seq.functions(), segments, x, std::move(opts), checkpoint_last);
}

Tensor checkpoint_sequential(const nn::Sequential& seq, const Tensor& x) {
  return checkpoint_sequential(seq.functions(), x);
}

}  // namespace remat
