// Containers of modules: ModuleList (indexed children, no forward) and
// Sequential (children applied in order), and checkpoint_sequential over a
// Sequential.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "remat/checkpoint.h"
#include "remat/nn/module.h"

namespace remat::nn {

// Children named "0", "1", ... in the order they were appended.
class ModuleList : public Module {
 public:
  explicit ModuleList(std::vector<std::shared_ptr<Module>> modules = {});

  void push_back(std::shared_ptr<Module> module);
  size_t size() const { return modules_.size(); }
  // Throws remat::Error when index is out of range.
  const std::shared_ptr<Module>& operator[](size_t index) const;
  auto begin() const { return modules_.begin(); }
  auto end() const { return modules_.end(); }

 protected:
  ModuleList(std::string type_name, std::vector<std::shared_ptr<Module>> modules);

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

// Applies its children in order: forward(x) = m[n-1](...m[0](x)).
class Sequential : public ModuleList {
 public:
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules = {});
  Tensor forward(const Tensor& x) override;

  // Each child's forward as a function, for checkpoint_sequential.
  std::vector<std::function<Tensor(const Tensor&)>> functions() const;
};

}  // namespace remat::nn

namespace remat {

// checkpoint_sequential (remat/checkpoint.h) over the children of seq: splits
// them into `segments` consecutive groups and checkpoints each.
Tensor checkpoint_sequential(const nn::Sequential& seq, int segments, const Tensor& x,
                             CheckpointOptions opts = {}, bool checkpoint_last = true);
// With round(sqrt(number of children)) segments.
Tensor checkpoint_sequential(const nn::Sequential& seq, const Tensor& x);

}  // namespace remat
