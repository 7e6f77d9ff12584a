// The backward engine: walks the tape in reverse from the roots. Every input
// of an entry precedes it on the tape, so taking pending entries in
// decreasing sequence order visits each one after all its consumers.
#include <map>
#include <queue>

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
      if (!edge.requires_grad || !input_grads[i].defined()) continue;
      check_grad_matches(*node, i, input_grads[i]);
      if (edge.producer) {
        add_to_node(edge.producer, edge.output_nr, input_grads[i]);
      } else if (auto leaf = edge.leaf.lock()) {
        leaf_grads.accumulate(leaf, std::move(input_grads[i]));
      }
    }
  }
  for (const auto& segment : replayed) segment->after_backward(retain_graph);
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

Tensor Tensor::grad() const { return Tensor(impl().grad); }

void Tensor::set_grad(const Tensor& g) const {
  REMAT_CHECK(
      !g.defined() || (g.shape() == shape() && g.dtype() == dtype() && g.device() == device()),
      "set_grad: gradient {} does not match tensor {}", TensorMeta::of(g).str(),
      TensorMeta::of(*this).str());
  impl().grad = g.impl_ptr();
}

}  // namespace remat
