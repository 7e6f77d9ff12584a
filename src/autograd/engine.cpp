// The backward engine: walks the tape in reverse from the roots. Every input
// of an entry precedes it on the tape, so taking pending entries in
// decreasing sequence order visits each one after all its consumers.
#include <atomic>
#include <map>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "autograd/node.h"
#include "remat/autograd.h"
#include "remat/core/grad_mode.h"
#include "remat/ops.h"

namespace remat {
namespace autograd {
namespace {

struct PendingGrads {
  std::shared_ptr<Node> node;
  std::vector<Tensor> grads;  // one per output
};

Tensor accumulate(const Tensor& into, const Tensor& g) { return into.defined() ? into + g : g; }

// Accumulates into leaves' .grad, remembering the leaves that had none. If
// the backward throws (out of memory halfway), those lose the gradient it
// gave them, so they are as before; gradients that existed keep what was
// added (the next step's zero_grad clears them).
class LeafGrads {
 public:
  // g is the only handle to its TensorImpl and its storage, and covers all
  // of that storage contiguously, so no other tensor reads or writes it.
  static bool sole_dense_owner(const Tensor& g) {
    const auto& impl = g.impl_ptr();
    const Storage& storage = *impl->storage;
    return impl.use_count() == 1 && impl->storage.use_count() == 1 && !storage.evicted &&
           !storage.packed && impl->offset == 0 && g.is_contiguous() &&
           storage.data.size() == g.nbytes() && !impl->grad_fn && !impl->grad;
  }

  LeafGrads() = default;
  LeafGrads(const LeafGrads&) = delete;
  LeafGrads& operator=(const LeafGrads&) = delete;
  ~LeafGrads() {
    for (const auto& created : created_) {
      if (auto leaf = created.lock()) leaf->grad.reset();
    }
  }

  void accumulate(const std::shared_ptr<TensorImpl>& leaf, Tensor g) {
    Tensor current(leaf->grad);
    if (!current.defined()) {
      // The leaf's first gradient is taken as it is when nothing else sees
      // its bytes (PyTorch's AccumulateGrad steals it the same way); one that
      // may alias a saved tensor, a view or another gradient is copied.
      Tensor own = sole_dense_owner(g) ? std::move(g) : g.clone();
      created_.push_back(leaf);
      leaf->grad = own.impl_ptr();
    } else {
      current.add_(g);
    }
  }
  // The backward finished: the gradients stay.
  void keep() { created_.clear(); }

 private:
  std::vector<std::weak_ptr<TensorImpl>> created_;
};

void check_grad_matches(const Node& node, size_t input, const Tensor& g) {
  const TensorMeta& want = node.input_meta[input];
  REMAT_CHECK(g.shape() == want.shape && g.dtype() == want.dtype && g.device() == want.device,
              "backward of op '{}' returned a gradient {} for input {} of {}", node.op->name,
              TensorMeta::of(g).str(), input, want.str());
}

// Registered gradient-ready hooks by leaf. A leaf's entry holds a weak
// reference, so a new tensor at a dead leaf's address inherits nothing.
struct HookEntry {
  uint64_t id;
  std::weak_ptr<TensorImpl> leaf;
  GradReadyHook hook;
};
struct HookRegistry {
  std::mutex mutex;
  std::unordered_map<const TensorImpl*, std::vector<HookEntry>> by_leaf;
  std::unordered_map<uint64_t, const TensorImpl*> leaf_of_id;
  uint64_t next_id = 1;
};
HookRegistry& hook_registry() {
  static HookRegistry* registry = new HookRegistry;  // never destroyed: handles may outlive main
  return *registry;
}
std::atomic<size_t> registered_hooks{0};

// One backward's view of the hooks: for each hooked leaf it reaches, how many
// edges to it are still to deliver. Costs nothing while no hook exists; with
// hooks, one walk of the graph before the pass.
class GradReadiness {
 public:
  explicit GradReadiness(const std::vector<Tensor>& roots) {
    if (registered_hooks.load() == 0) return;
    {
      HookRegistry& registry = hook_registry();
      std::lock_guard lock(registry.mutex);
      for (const auto& [impl, entries] : registry.by_leaf) {
        for (const HookEntry& entry : entries) {
          if (entry.leaf.lock().get() == impl) hooks_[impl].push_back(entry.hook);
        }
      }
    }
    if (hooks_.empty()) return;
    std::vector<const Node*> stack;
    std::unordered_set<const Node*> seen;
    for (const Tensor& root : roots) {
      if (root.impl().grad_fn) {
        stack.push_back(root.impl().grad_fn.get());
      } else {
        expect(root.impl_ptr());
      }
    }
    while (!stack.empty()) {
      const Node* node = stack.back();
      stack.pop_back();
      if (!seen.insert(node).second) continue;
      for (const NodeInput& input : node->inputs) {
        const Edge& edge = input.edge;
        if (!edge.requires_grad) continue;
        if (edge.producer) {
          stack.push_back(edge.producer.get());
        } else if (auto leaf = edge.leaf.lock()) {
          expect(leaf);
        }
      }
    }
  }

  // One edge to the leaf has delivered its gradient, or its entry ran and
  // gave none: the last one makes the leaf's gradient final.
  void delivered(const std::shared_ptr<TensorImpl>& leaf) {
    auto it = remaining_.find(leaf.get());
    if (it == remaining_.end() || --it->second.second > 0) return;
    remaining_.erase(it);
    fire(leaf);
  }

  // The pass is over: leaves still waiting on entries that never received a
  // gradient are final now.
  void finish() {
    auto waiting = std::move(remaining_);
    for (const auto& [impl, entry] : waiting) fire(entry.first);
  }

 private:
  void expect(const std::shared_ptr<TensorImpl>& leaf) {
    if (!hooks_.count(leaf.get())) return;
    auto [it, inserted] = remaining_.try_emplace(leaf.get(), leaf, 0);
    ++it->second.second;
  }
  void fire(const std::shared_ptr<TensorImpl>& leaf) {
    const Tensor tensor(leaf);
    for (const GradReadyHook& hook : hooks_.at(leaf.get())) hook(tensor);
  }

  std::unordered_map<const TensorImpl*, std::vector<GradReadyHook>> hooks_;
  // Held strongly for the pass, keyed by address.
  std::unordered_map<const TensorImpl*, std::pair<std::shared_ptr<TensorImpl>, int64_t>> remaining_;
};

// The callbacks queued during the backward this thread runs (null outside one).
thread_local std::vector<std::function<void()>>* queued_callbacks = nullptr;

thread_local uint64_t cursor = kNotInBackward;

// Sets the cursor for the length of one backward pass.
class CursorScope {
 public:
  CursorScope() : previous_(cursor) {}
  ~CursorScope() { cursor = previous_; }
  CursorScope(const CursorScope&) = delete;
  CursorScope& operator=(const CursorScope&) = delete;

 private:
  uint64_t previous_;
};

// Points queue_backward_callback at one pass's queue for its length.
class CallbackScope {
 public:
  explicit CallbackScope(std::vector<std::function<void()>>* queue) : previous_(queued_callbacks) {
    queued_callbacks = queue;
  }
  ~CallbackScope() { queued_callbacks = previous_; }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

 private:
  std::vector<std::function<void()>>* previous_;
};

}  // namespace

uint64_t backward_cursor() { return cursor; }

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds,
                  bool retain_graph) {
  if (const Segment* open = active_segment()) {
    throw Error(fmt::format(
        "backward() inside checkpoint() ({}): the segment is still recording, and a backward "
        "now would free or replay entries it has not finished. Return the auxiliary loss from "
        "the checkpointed function and call backward once on the total outside it",
        open->describe()));
  }
  NoGradGuard no_grad;
  memory::TagScope tag("backward");
  // Pending gradients by tape position, latest first.
  std::map<uint64_t, PendingGrads, std::greater<>> pending;
  std::unordered_set<std::shared_ptr<Segment>> replayed;
  LeafGrads leaf_grads;
  CursorScope cursor_scope;
  GradReadiness readiness(roots);
  std::vector<std::function<void()>> callbacks;
  CallbackScope callback_scope(&callbacks);
  auto add_to_node = [&](const std::shared_ptr<Node>& node, int output_nr, const Tensor& g) {
    auto [it, inserted] = pending.try_emplace(node->sequence);
    if (inserted) {
      it->second.node = node;
      it->second.grads.resize(node->outputs.size());
    }
    Tensor& slot = it->second.grads[static_cast<size_t>(output_nr)];
    slot = accumulate(slot, g);
  };

  for (size_t r = 0; r < roots.size(); ++r) {
    const Tensor& root = roots[r];
    REMAT_CHECK(root.requires_grad(),
                "backward: the root tensor {} does not require grad (no operand of the ops that "
                "made it required grad, or it was made under NoGradGuard)",
                TensorMeta::of(root).str());
    if (root.impl().grad_fn) {
      add_to_node(root.impl().grad_fn, root.impl().output_nr, seeds[r]);
    } else {
      leaf_grads.accumulate(root.impl_ptr(), seeds[r]);
      readiness.delivered(root.impl_ptr());
    }
  }

  while (!pending.empty()) {
    auto it = pending.begin();
    std::shared_ptr<Node> node = std::move(it->second.node);
    std::vector<Tensor> grads = std::move(it->second.grads);
    pending.erase(it);
    cursor = node->sequence;
    const ops::OpDef& op = *node->op;
    REMAT_CHECK(!node->released,
                "backward through op '{}' (tape entry {}) a second time: its saved tensors were "
                "freed by the first backward; pass retain_graph=true to that one",
                op.name, node->sequence);
    if (node->segment_entry) {  // a checkpointed entry: regenerate what it dropped
      const std::shared_ptr<Segment>& segment = node->segment_entry->segment;
      segment->reached();
      if (node->lacks_saved_tensors()) {
        std::vector<const Node*> rest;
        rest.reserve(pending.size());
        for (const auto& [sequence, p] : pending) rest.push_back(p.node.get());
        segment->materialize(*node, rest);
      }
      replayed.insert(segment);
    }

    // Multi-output ops: an output nobody used still needs a zero gradient.
    for (size_t i = 0; i < grads.size() && op.visible(i); ++i) {
      const TensorMeta& m = node->outputs[i].meta;
      if (!grads[i].defined() && is_floating(m.dtype)) grads[i] = zeros(m.shape, m.dtype, m.device);
    }
    std::vector<Tensor> input_grads;
    {  // the saved tensors unpacked here are dropped at the end of the scope
      ops::BackwardArgs args{op, node->attrs, node->input_meta, std::move(grads), {}, {}, {}};
      args.needs_input_grad.resize(node->inputs.size());
      for (size_t i = 0; i < node->inputs.size(); ++i) {
        args.needs_input_grad[i] = node->inputs[i].edge.requires_grad;
      }
      args.saved_inputs.resize(node->inputs.size());
      for (int i : op.save_inputs) {
        args.saved_inputs[static_cast<size_t>(i)] = node->unpack(
            node->inputs[static_cast<size_t>(i)].saved, "input", static_cast<size_t>(i));
      }
      args.saved_outputs.resize(node->outputs.size());
      for (int i : op.save_outputs) {
        args.saved_outputs[static_cast<size_t>(i)] = node->unpack(
            node->outputs[static_cast<size_t>(i)].saved, "output", static_cast<size_t>(i));
      }
      input_grads = op.backward(args);
    }
    if (!retain_graph) node->release();

    REMAT_CHECK(input_grads.size() == node->inputs.size(),
                "backward of op '{}' returned {} gradients for {} inputs", op.name,
                input_grads.size(), node->inputs.size());
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const Edge& edge = node->inputs[i].edge;
      if (!edge.requires_grad) continue;
      const bool has_grad = input_grads[i].defined();
      if (has_grad) check_grad_matches(*node, i, input_grads[i]);
      if (edge.producer) {
        if (has_grad) add_to_node(edge.producer, edge.output_nr, input_grads[i]);
      } else if (auto leaf = edge.leaf.lock()) {
        if (has_grad) leaf_grads.accumulate(leaf, std::move(input_grads[i]));
        readiness.delivered(leaf);
      }
    }
  }
  readiness.finish();
  for (const auto& segment : replayed) segment->after_backward(retain_graph);
  // By index: a callback may queue another.
  for (size_t i = 0; i < callbacks.size(); ++i) {
    auto callback = std::move(callbacks[i]);
    callback();
  }
  leaf_grads.keep();
}

}  // namespace autograd

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& gradients,
              bool retain_graph) {
  REMAT_CHECK(gradients.empty() || gradients.size() == roots.size(),
              "backward: {} roots but {} gradients", roots.size(), gradients.size());
  std::vector<Tensor> seeds;
  for (size_t r = 0; r < roots.size(); ++r) {
    const Tensor& root = roots[r];
    Tensor seed = gradients.empty() ? Tensor() : gradients[r];
    if (!seed.defined()) {
      REMAT_CHECK(root.numel() == 1,
                  "backward of a non-scalar tensor {} needs a gradient argument (only a "
                  "one-element root gets an implicit gradient of 1)",
                  TensorMeta::of(root).str());
      seed = ones(root.shape(), root.dtype(), root.device());
    } else {
      REMAT_CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype() &&
                      seed.device() == root.device(),
                  "backward: gradient {} does not match its root {}", TensorMeta::of(seed).str(),
                  TensorMeta::of(root).str());
    }
    seeds.push_back(seed);
  }
  autograd::run_backward(roots, seeds, retain_graph);
}

void backward(const Tensor& root, const Tensor& gradient, bool retain_graph) {
  backward(std::vector<Tensor>{root}, std::vector<Tensor>{gradient}, retain_graph);
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  remat::backward(*this, gradient, retain_graph);
}

Tensor& Tensor::requires_grad_(bool on) {
  REMAT_CHECK(is_leaf(),
              "requires_grad_ on a tensor produced by op '{}': only leaves can be marked (detach() "
              "it first)",
              impl().grad_fn->op->name);
  REMAT_CHECK(!on || is_floating(dtype()),
              "requires_grad_ on a {} tensor: only floating-point "
              "tensors can require grad",
              dtype());
  if (on) ops::install_recorder(&autograd::record);
  impl().requires_grad = on;
  return *this;
}

void zero_grad(const Tensor& t, bool set_to_none) {
  if (set_to_none) {
    t.impl().grad.reset();
  } else if (Tensor grad = t.grad(); grad.defined()) {
    grad.zero_();
  }
}

GradReadyHandle register_grad_ready_hook(const Tensor& leaf, GradReadyHook hook) {
  REMAT_CHECK(leaf.defined() && leaf.is_leaf() && leaf.requires_grad(),
              "register_grad_ready_hook: the tensor must be a leaf that requires grad");
  REMAT_CHECK(hook != nullptr, "register_grad_ready_hook: empty hook");
  autograd::HookRegistry& registry = autograd::hook_registry();
  std::lock_guard lock(registry.mutex);
  const uint64_t id = registry.next_id++;
  const TensorImpl* impl = leaf.impl_ptr().get();
  registry.by_leaf[impl].push_back({id, leaf.impl_ptr(), std::move(hook)});
  registry.leaf_of_id.emplace(id, impl);
  ++autograd::registered_hooks;
  return GradReadyHandle(id);
}

void GradReadyHandle::reset() {
  if (id_ == 0) return;
  autograd::HookRegistry& registry = autograd::hook_registry();
  std::lock_guard lock(registry.mutex);
  auto it = registry.leaf_of_id.find(id_);
  if (it != registry.leaf_of_id.end()) {
    auto& entries = registry.by_leaf[it->second];
    std::erase_if(entries, [&](const autograd::HookEntry& e) { return e.id == id_; });
    if (entries.empty()) registry.by_leaf.erase(it->second);
    registry.leaf_of_id.erase(it);
    --autograd::registered_hooks;
  }
  id_ = 0;
}

GradReadyHandle& GradReadyHandle::operator=(GradReadyHandle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    other.id_ = 0;
  }
  return *this;
}

void queue_backward_callback(std::function<void()> fn) {
  REMAT_CHECK(autograd::queued_callbacks != nullptr,
              "queue_backward_callback outside backward: it queues work for the end of the "
              "running pass, so call it from a gradient-ready hook");
  autograd::queued_callbacks->push_back(std::move(fn));
}

Tensor Tensor::grad() const { return Tensor(impl().grad); }

void Tensor::set_grad(const Tensor& g) const {
  REMAT_CHECK(
      !g.defined() || (g.shape() == shape() && g.dtype() == dtype() && g.device() == device()),
      "set_grad: gradient {} does not match tensor {}", TensorMeta::of(g).str(),
      TensorMeta::of(*this).str());
  impl().grad = g.impl_ptr();
}

}  // namespace remat
