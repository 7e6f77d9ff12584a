// Reverse-mode differentiation over the tape.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "remat/core/grad_mode.h"
#include "remat/core/tensor.h"

namespace remat {

// Accumulates d(root)/d(leaf) into every leaf's .grad that requires grad.
// `gradient` seeds the root; it may be omitted only for a one-element root.
// Without retain_graph every tape entry frees its saved tensors as soon as its
// backward has run, and a second backward through them throws.
void backward(const Tensor& root, const Tensor& gradient = {}, bool retain_graph = false);
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& gradients,
              bool retain_graph = false);

// Clears one tensor's .grad before the next backward: drops it (the next
// backward then takes its first gradient as computed), or with set_to_none =
// false zeroes it in place so its bytes stay allocated. What Module and
// Optimizer zero_grad do for each parameter.
void zero_grad(const Tensor& t, bool set_to_none = true);

// Gradient-ready hooks: what data parallelism needs to reduce a gradient while
// the rest of backward still runs (PyTorch's post-accumulate-grad hook).
// A hook on a leaf runs during each backward that reaches the leaf, once, as
// soon as leaf.grad() holds everything that backward adds to it: after the
// last tape entry with an edge to the leaf has run, or at the end of the pass
// for an edge whose entry received no gradient. A backward that does not reach
// the leaf does not call it. Checkpoint replays regenerate saved tensors
// without delivering gradients, so they never call a hook. Hooks run on the
// backward's thread; one that throws aborts the backward like a failing op.
using GradReadyHook = std::function<void(const Tensor& leaf)>;

// Removes its hook when destroyed (or by reset()); move-only.
class GradReadyHandle {
 public:
  GradReadyHandle() = default;
  ~GradReadyHandle() { reset(); }
  GradReadyHandle(GradReadyHandle&& other) noexcept : id_(other.id_) { other.id_ = 0; }
  GradReadyHandle& operator=(GradReadyHandle&& other) noexcept;
  GradReadyHandle(const GradReadyHandle&) = delete;
  GradReadyHandle& operator=(const GradReadyHandle&) = delete;
  void reset();

 private:
  friend GradReadyHandle register_grad_ready_hook(const Tensor&, GradReadyHook);
  explicit GradReadyHandle(uint64_t id) : id_(id) {}
  uint64_t id_ = 0;
};

// `leaf` must be a leaf that requires grad. Several hooks on one leaf run in
// registration order.
[[nodiscard]] GradReadyHandle register_grad_ready_hook(const Tensor& leaf, GradReadyHook hook);

// From inside a backward (a hook): runs fn once when this pass has delivered
// every gradient and run every hook, before backward() returns. Callbacks run
// in the order queued; one queued by a callback runs too. If the backward
// throws first, its queued callbacks are dropped. Outside backward it throws.
void queue_backward_callback(std::function<void()> fn);

}  // namespace remat
