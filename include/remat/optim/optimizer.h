// optim::Optimizer: what training loops, schedulers and checkpoints of a run
// see of an optimizer. It holds handles to the parameters it updates (the
// tensors a module owns: nn::Module::to() moves them in place, and the
// optimizer sees the move) and, for each, the state its update rule keeps.
// One learning rate covers every parameter (there are no parameter groups);
// schedulers set it between steps. PerParameterOptimizer is the base of SGD,
// Adam and AdamW; distributed::ZeroRedundancyOptimizer is another Optimizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "remat/core/tensor.h"

namespace remat::optim {

// What an optimizer keeps for one parameter. Tensors are allocated on the
// first step the parameter takes, on its device and in its dtype, from the
// caching allocator (so they show in memory::stats); a parameter that never
// gets a gradient costs nothing. Fields an optimizer does not use stay
// undefined. The names are torch.optim's state keys.
struct ParamState {
  int64_t step = 0;        // updates this parameter has taken
  Tensor momentum_buffer;  // SGD with momentum
  Tensor exp_avg;          // Adam, AdamW: first moment
  Tensor exp_avg_sq;       // Adam, AdamW: second moment
};

// One parameter's step as prepare() leaves it for commit(): the state after
// the step (step count included), its tensors allocated.
struct PendingUpdate {
  ParamState state;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // The state belongs to these parameters: a copy would update them twice.
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Updates, in place and without recording on the tape, every parameter that
  // has a gradient. Parameters without one are skipped: neither they nor their
  // state (step count included) change. Each update bumps the parameter's
  // version, so a backward that saved it before the step refuses to run.
  // Allocations are tagged "optimizer" on the memory timeline.
  virtual void step() = 0;
  // Drops every parameter's gradient (PyTorch's default since 2.0): the next
  // backward takes its first gradient as computed instead of adding it to
  // zeros, and the gradients' memory is free between steps. With
  // set_to_none = false existing gradients are zeroed in place and stay
  // allocated, so every step, the first included, holds the same bytes.
  void zero_grad(bool set_to_none = true);

  double lr() const { return lr_; }
  // The rate later steps use; finite and >= 0. Schedulers call it.
  void set_lr(double lr);

  const std::vector<Tensor>& parameters() const { return params_; }
  // The state this optimizer holds for parameters()[i] (all fields empty for
  // a parameter whose state lives elsewhere, as on another rank under ZeRO).
  virtual const ParamState& state(size_t i) const = 0;
  // "SGD", "Adam", "AdamW", ...: the prefix of this optimizer's error messages.
  const std::string& name() const { return name_; }

 protected:
  // Throws unless params is non-empty and holds distinct floating-point leaf
  // tensors, and lr is valid.
  Optimizer(std::string name, std::vector<Tensor> params, double lr);
  // Throws unless i indexes parameters().
  void check_index(size_t i) const;

 private:
  std::string name_;
  std::vector<Tensor> params_;
  double lr_ = 0;
};

// An optimizer that updates each parameter from its gradient and its own
// state: SGD, Adam, AdamW. Its step() is all or nothing under allocation
// failure: everything the step allocates (state, temporaries) is allocated
// before any parameter is written, so an OutOfMemoryError leaves every
// parameter and its state as it was.
class PerParameterOptimizer : public Optimizer {
 public:
  void step() override;
  const ParamState& state(size_t i) const override;

 protected:
  PerParameterOptimizer(std::string name, std::vector<Tensor> params, double lr);
  // One parameter's update in two halves; step() runs prepare() for every
  // parameter before the first commit(). prepare() does all the allocating:
  // it fills `next`, which starts as a copy of the parameter's state with the
  // step counted (the first is 1), without writing the parameter or any
  // tensor of its current state. commit() writes the parameter (and state
  // tensors that `next` shares) and must not allocate; step() then takes
  // next.state as the parameter's state.
  virtual void prepare(const Tensor& param, const Tensor& grad, PendingUpdate& next) = 0;
  virtual void commit(Tensor& param, const Tensor& grad, const PendingUpdate& next) = 0;

 private:
  std::vector<ParamState> states_;
};

}  // namespace remat::optim
