#include <algorithm>
#include <atomic>

#include "autograd/node.h"
#include "remat/core/grad_mode.h"

namespace remat::autograd {
namespace {
std::atomic<int64_t> live_entry_count{0};
}  // namespace

Tensor Node::unpack(const std::optional<SavedTensor>& slot, const char* kind, size_t index) const {
  REMAT_CHECK(slot.has_value(), "op '{}' backward used {} {} which its definition does not save",
              op->name, kind, index);
  if (!slot->value.defined()) return {};  // an absent optional operand
  ensure_resident(slot->value);
  uint32_t now = slot->value.version();
  REMAT_CHECK(now == slot->version,
              "a tensor saved for backward of op '{}' ({} {}, {}) was modified in place: saved "
              "at version {}, now at version {}",
              op->name, kind, index, TensorMeta::of(slot->value).str(), slot->version, now);
  return slot->value;
}

Node::Node() { live_entry_count.fetch_add(1, std::memory_order_relaxed); }

Node::~Node() {
  // Producers this entry alone keeps alive are moved to a local stack and freed
  // one at a time; each of them hands its own sole-owned producers over first,
  // so no destructor below this one finds anything left to free recursively.
  std::vector<std::shared_ptr<Node>> orphans;
  auto adopt_producers = [&orphans](Node& node) {
    for (NodeInput& input : node.inputs) {
      std::shared_ptr<Node>& producer = input.edge.producer;
      if (producer && producer.use_count() == 1) orphans.push_back(std::move(producer));
    }
  };
  adopt_producers(*this);
  while (!orphans.empty()) {
    std::shared_ptr<Node> node = std::move(orphans.back());
    orphans.pop_back();
    adopt_producers(*node);
  }
  live_entry_count.fetch_sub(1, std::memory_order_relaxed);
}

bool Node::lacks_saved_tensors() const {
  return std::any_of(op->save_inputs.begin(), op->save_inputs.end(),
                     [&](int i) { return !inputs[static_cast<size_t>(i)].saved; }) ||
         std::any_of(op->save_outputs.begin(), op->save_outputs.end(),
                     [&](int i) { return !outputs[static_cast<size_t>(i)].saved; });
}

void Node::release() {
  for (NodeInput& input : inputs) input.saved.reset();
  for (NodeOutput& output : outputs) output.saved.reset();
  if (segment_entry) {
    for (auto& s : segment_entry->input_values) s.reset();
  }
  regeneration.reset();
  released = true;
}

namespace {
std::atomic<RecordObserver> record_observer{nullptr};
std::atomic<Regenerator> regenerator{nullptr};
}  // namespace

void set_record_observer(RecordObserver observer) { record_observer.store(observer); }
void set_regenerator(Regenerator r) { regenerator.store(r); }

void ensure_resident(const Tensor& t) {
  const std::shared_ptr<Storage>& storage = t.impl().storage;
  if (storage->packed) {
    storage->packed->prepare_read(*storage);
    return;
  }
  if (!storage->evicted) return;
  Regenerator regenerate = regenerator.load();
  REMAT_CHECK(regenerate != nullptr, "an evicted tensor {} and no regenerator",
              TensorMeta::of(t).str());
  regenerate(storage);
}

namespace {
thread_local Segment* innermost_segment = nullptr;
}

Segment* active_segment() { return innermost_segment; }

ActiveSegmentScope::ActiveSegmentScope(Segment* segment) : previous_(innermost_segment) {
  innermost_segment = segment;
}

ActiveSegmentScope::~ActiveSegmentScope() { innermost_segment = previous_; }

uint64_t next_sequence() {
  // Relaxed suffices: a thread can only read a tensor another thread made
  // after a synchronisation that also orders the two counter updates.
  static std::atomic<uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

int64_t live_entries() { return live_entry_count.load(std::memory_order_relaxed); }

void record(const ops::OpDef& def, const std::vector<Tensor>& inputs, const ops::Attrs& attrs,
            std::vector<Tensor>& outputs) {
  auto node = std::make_shared<Node>();
  node->sequence = next_sequence();
  node->op = &def;
  node->attrs = attrs;
  node->inputs.resize(inputs.size());
  node->input_meta.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined()) continue;  // an absent optional operand: no gradient, no metadata
    node->input_meta[i] = TensorMeta::of(x);
    Edge& e = node->inputs[i].edge;
    e.requires_grad = x.requires_grad();
    if (x.impl().grad_fn) {
      e.producer = x.impl().grad_fn;
      e.output_nr = x.impl().output_nr;
    } else if (x.requires_grad()) {
      e.leaf = x.impl_ptr();
    }
  }
  for (int i : def.save_inputs) {
    const Tensor& x = inputs.at(static_cast<size_t>(i));
    node->inputs[static_cast<size_t>(i)].saved =
        x.defined() ? SavedTensor{x.detach(), x.version()} : SavedTensor{};
  }
  node->outputs.resize(outputs.size());
  for (int i : def.save_outputs) {
    const Tensor& y = outputs.at(static_cast<size_t>(i));
    node->outputs[static_cast<size_t>(i)].saved = SavedTensor{y.detach(), y.version()};
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl& y = outputs[i].impl();
    node->outputs[i].meta = TensorMeta::of(outputs[i]);
    node->outputs[i].tensor = outputs[i].impl_ptr();
    if (is_floating(y.dtype) && def.visible(i)) {
      y.requires_grad = true;
      y.grad_fn = node;
      y.output_nr = static_cast<int>(i);
    }
  }
  if (Segment* segment = active_segment()) {
    node->segment_entry = std::make_unique<SegmentEntry>();
    node->segment_entry->segment = segment->shared_from_this();
    segment->on_record(node, inputs, outputs);
  }
  if (RecordObserver observe = record_observer.load()) observe(node, inputs, outputs);
}

}  // namespace remat::autograd
