#include "checkpoint/segment.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "remat/core/grad_mode.h"

namespace remat::checkpointing {
namespace {

using autograd::Node;
using autograd::SavedTensor;

thread_local CheckpointStats thread_stats;

// This thread's segments that pack, by where they begin on the tape (and
// depth: a segment may begin with a nested one): backward reaches them in
// reverse, and each prefetches the one before it.
using PackingSegments = std::map<std::pair<uint64_t, int>, std::weak_ptr<CheckpointSegment>>;
thread_local PackingSegments packing_segments;

CheckpointSegment* segment_of(const Node& node) {
  // Only checkpoint() creates segments.
  return node.segment_entry ? static_cast<CheckpointSegment*>(node.segment_entry->segment.get())
                            : nullptr;
}

// The values of inputs from outside the segment that an entry of it holds for replay.
std::vector<std::optional<SavedTensor>>& held_inputs(const Node& node) {
  return node.segment_entry->input_values;
}

Source source_of(const Node& producer, int output) { return {producer.sequence, output}; }

const char* slot_name(bool output) { return output ? "output" : "input"; }

}  // namespace

CheckpointStats current_stats() { return thread_stats; }
void reset_stats() { thread_stats = {}; }

Fingerprint Fingerprint::of(const Tensor& t) {
  Tensor host = t.to(kCPU).contiguous();
  // FNV-1a over the bytes.
  uint64_t hash = 1469598103934665603ull;
  const auto* bytes = static_cast<const unsigned char*>(host.data_ptr());
  for (int64_t i = 0; i < host.nbytes(); ++i) {
    hash = (hash ^ bytes[i]) * 1099511628211ull;
  }
  return {TensorMeta::of(t), hash};
}

CheckpointSegment::CheckpointSegment(std::shared_ptr<CheckpointSegment> parent,
                                     CheckpointOptions options)
    : parent_(std::move(parent)),
      root_(parent_ ? parent_->root_ : this),
      depth_(parent_ ? parent_->depth_ + 1 : 0),
      options_(std::move(options)) {
  if (options_.policy.placement() != Policy::Placement::Device) {
    packer_ = std::make_unique<Packer>(options_.policy, options_.tag);
  }
}

CheckpointSegment::~CheckpointSegment() {
  if (packer_ && recorded_any_) packing_segments.erase({first_sequence_, depth_});
}

std::shared_ptr<CheckpointSegment> CheckpointSegment::active() {
  autograd::Segment* s = autograd::active_segment();
  if (s == nullptr) return nullptr;
  return std::static_pointer_cast<CheckpointSegment>(s->shared_from_this());
}

bool CheckpointSegment::contains(const CheckpointSegment* other) const {
  for (; other != nullptr; other = other->parent_.get()) {
    if (other == this) return true;
  }
  return false;
}

// Which segment regenerates a value made by `producer` for an entry of this
// segment: the innermost segment holding both (null when the value comes from
// outside the root segment and is simply kept).
CheckpointSegment* CheckpointSegment::restoring_segment(const Node& producer) {
  CheckpointSegment* a = this;
  CheckpointSegment* b = segment_of(producer);
  if (b == nullptr || !root_->contains(b)) return nullptr;
  while (a->depth_ > b->depth_) a = a->parent_.get();
  while (b->depth_ > a->depth_) b = b->parent_.get();
  while (a != b) {
    a = a->parent_.get();
    b = b->parent_.get();
  }
  return a;
}

void CheckpointSegment::on_record(const std::shared_ptr<Node>& node,
                                  const std::vector<Tensor>& inputs,
                                  const std::vector<Tensor>& outputs) {
  // An entry of a nested segment is the first of every enclosing one that has
  // none yet: a replay walks back to its root's first entry, which may be an
  // inner segment's (a segment that begins with a nested one).
  for (CheckpointSegment* s = this; s != nullptr; s = s->parent_.get()) {
    s->last_sequence_ = node->sequence;
    if (s->recorded_any_) continue;
    s->first_sequence_ = node->sequence;
    s->recorded_any_ = true;
    if (s->packer_) {
      packing_segments[{s->first_sequence_, s->depth_}] =
          std::static_pointer_cast<CheckpointSegment>(s->shared_from_this());
    }
  }
  const ops::OpDef& op = *node->op;
  // Keeping every output, the segment never replays its own entries, so it
  // holds no inputs for a replay.
  const bool replays = options_.policy.kind() != Policy::Kind::SaveAll;
  held_inputs(*node).resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined()) continue;
    if (op.replay_ignores_input && op.replay_ignores_input(node->attrs, i)) continue;
    const autograd::Edge& edge = node->inputs[i].edge;
    CheckpointSegment* owner = edge.producer ? restoring_segment(*edge.producer) : nullptr;
    const Source source = edge.producer ? source_of(*edge.producer, edge.output_nr) : Source{};
    if (owner == nullptr || root_->kept_.count(source)) {
      // From outside the segment (an input, a weight, a constant) or kept by
      // policy: hold it for replay.
      if (replays) held_inputs(*node)[i] = SavedTensor{x.detach(), x.version()};
      continue;
    }
    // Made inside: never held, so the replay recomputes it as it was made. An
    // in-place change in between (through a detached alias) would make the
    // replay silently differ from this forward.
    const auto made = root_->made_at_version_.find(source);
    if (made != root_->made_at_version_.end()) {
      REMAT_CHECK(x.version() == made->second,
                  "{}: input {} of {} was made inside the segment by op '{}' and modified in "
                  "place before this read (made at version {}, read at version {}); the replay "
                  "would recompute it without that change. Modify a clone, or move the in-place "
                  "change out of checkpoint()",
                  describe(), i,
                  fmt::format("op '{}' (entry {})", op.name, node->sequence - first_sequence_),
                  edge.producer->op->name, made->second, x.version());
    }
    // A saved copy is dropped; an entry of an outer segment regenerates it
    // for this one's replay.
    if (node->inputs[i].saved.has_value()) {
      drop(node, SlotKind::SavedInput, i, edge.producer, source, x, this);
    }
    if (owner != this) drop(node, SlotKind::InputValue, i, edge.producer, source, x, owner);
  }
  const bool keep = options_.policy.keeps(op);
  for (size_t j = 0; j < outputs.size(); ++j) {
    const Source source = source_of(*node, static_cast<int>(j));
    root_->made_at_version_[source] = outputs[j].version();
    if (keep) {
      root_->kept_.insert(source);
    } else if (node->outputs[j].saved.has_value()) {
      drop(node, SlotKind::SavedOutput, j, node, source, outputs[j], this);
    }
  }
  if (packer_) pack_kept(*node);
}

namespace {
// The entry output that owns the bytes output `output` of `producer` holds,
// views (transpose, reshape) followed to their base.
struct Owner {
  const Node* node;  // null: a parameter, an input or a constant, alive anyway
  int output;
};
Owner owner_of(const Node* producer, int output) {
  while (producer != nullptr && producer->op->view) {
    const autograd::Edge& base = producer->inputs.front().edge;
    producer = base.producer.get();
    output = base.output_nr;
  }
  return {producer, output};
}

// A property of the bytes, so every reader of a storage packs it alike:
// exact where the producing op says so, exact zeros where its backward reads them.
ValueRule rule_of(Owner owner) {
  const ops::OpDef& op = *owner.node->op;
  if (std::ranges::find(op.exact_outputs, owner.output) != op.exact_outputs.end()) {
    return ValueRule::Exact;
  }
  return std::ranges::find(op.zero_mask_outputs, owner.output) != op.zero_mask_outputs.end()
             ? ValueRule::ExactZeros
             : ValueRule::Rounded;
}
}  // namespace

// Every activation the entry keeps, for its backward or for a replay, goes
// to the packer; parameters, inputs and constants, and views of them (a
// weight's transpose), stay.
void CheckpointSegment::pack_kept(Node& node) {
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const autograd::Edge& edge = node.inputs[i].edge;
    const Owner owner = owner_of(edge.producer.get(), edge.output_nr);
    if (owner.node == nullptr) continue;
    const ValueRule rule = rule_of(owner);
    if (auto& saved = node.inputs[i].saved) saved = packer_->pack(*saved, node.sequence, rule);
    // The replay reads these when backward reaches the segment: first.
    if (auto& held = held_inputs(node)[i]) {
      held = packer_->pack(*held, autograd::kNotInBackward, rule);
    }
  }
  for (size_t j = 0; j < node.outputs.size(); ++j) {
    const Owner owner = owner_of(&node, static_cast<int>(j));
    if (owner.node == nullptr) return;
    if (auto& saved = node.outputs[j].saved) {
      saved = packer_->pack(*saved, node.sequence, rule_of(owner));
    }
  }
}

void CheckpointSegment::drop(const std::shared_ptr<Node>& node, SlotKind kind, size_t index,
                             const std::shared_ptr<Node>& producer, Source source,
                             const Tensor& value, CheckpointSegment* owner) {
  DroppedSlot slot{node,
                   kind,
                   index,
                   source,
                   producer,
                   value.impl().storage,
                   value.version(),
                   options_.debug ? Fingerprint::of(value) : Fingerprint{}};
  owner->dropped_.push_back(std::move(slot));
  if (kind == SlotKind::SavedInput) node->inputs[index].saved.reset();
  if (kind == SlotKind::SavedOutput) node->outputs[index].saved.reset();
}

std::string CheckpointSegment::describe() const {
  return fmt::format("checkpoint segment '{}'", options_.tag);
}

std::string CheckpointSegment::where(const Node& node) const {
  const CheckpointSegment* s = segment_of(node);
  return fmt::format("op '{}' (entry {} of {})", node.op->name, node.sequence - s->first_sequence_,
                     s->describe());
}

// A value dropped in the forward must not have been changed in place while it
// lived: the replay would silently compute with the original.
void CheckpointSegment::check_unchanged(const DroppedSlot& slot, const char* when) const {
  std::shared_ptr<Storage> storage = slot.storage.lock();
  if (!storage) return;
  const uint32_t now = storage->version.load();
  auto node = slot.node.lock();
  REMAT_CHECK(now == slot.version,
              "{}: a tensor {} of {} was modified in place {}: it was at version {}, now at "
              "version {}",
              options_.tag, slot.kind == SlotKind::SavedOutput ? "made" : "read",
              node ? where(*node) : std::string("a tape entry"), when, slot.version, now);
}

void CheckpointSegment::close() {
  for (const DroppedSlot& slot : dropped_) check_unchanged(slot, "inside the segment");
  if (packer_) packer_->sync_versions();
}

void CheckpointSegment::reached() {
  for (CheckpointSegment* s = this; s != nullptr && !s->reached_; s = s->parent_.get()) {
    s->reached_ = true;
    if (s->options_.on_backward) s->options_.on_backward();
    if (s->packer_) s->prefetch_ahead();
  }
}

// What this segment packed comes back now (unless the segment after it
// prefetched it), and what the packing segment before it packed starts
// coming back, to arrive while this one's backward runs, if that segment
// ends where this one begins: backward runs from this one straight into it.
// With other entries between, its bytes come back when backward reaches it,
// so they are never on the device while those entries' backward runs (the
// memory model, budget.cpp, counts them only next to an adjacent segment).
void CheckpointSegment::prefetch_ahead() {
  packer_->prefetch();
  auto it = packing_segments.lower_bound({first_sequence_, depth_});
  while (it != packing_segments.begin()) {
    --it;
    std::shared_ptr<CheckpointSegment> before = it->second.lock();
    if (!before) {
      it = packing_segments.erase(it);
      continue;
    }
    if (before->contains(this)) continue;  // an enclosing segment, reached with this one
    if (before->last_sequence_ + 1 == first_sequence_) before->packer_->prefetch();
    return;
  }
}

void CheckpointSegment::materialize(Node& node, const std::vector<const Node*>& pending) {
  const EntrySet reachable = entries_to_run(node, pending);
  // Outer segments first: they regenerate what inner ones read from them.
  std::vector<CheckpointSegment*> chain;
  for (CheckpointSegment* s = segment_of(node); s != nullptr; s = s->parent_.get()) {
    chain.push_back(s);
  }
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) (*it)->replay(reachable);
}

// The entries of this backward still to run that a replay of the root segment
// could serve: everything reachable from `node` and the pending entries,
// walked no further back than the root's first entry.
CheckpointSegment::EntrySet CheckpointSegment::entries_to_run(
    const Node& node, const std::vector<const Node*>& pending) const {
  const uint64_t first = root_->first_sequence_;
  std::vector<const Node*> stack(pending.begin(), pending.end());
  stack.push_back(&node);
  EntrySet seen;
  while (!stack.empty()) {
    const Node* entry = stack.back();
    stack.pop_back();
    if (entry->sequence < first || !seen.insert(entry).second) continue;
    for (const autograd::NodeInput& input : entry->inputs) {
      const autograd::Edge& edge = input.edge;
      if (edge.producer) stack.push_back(edge.producer.get());
    }
  }
  return seen;
}

Tensor CheckpointSegment::input_for_replay(const Node& node, size_t index,
                                           const std::map<Source, Tensor>& values) const {
  const autograd::Edge& edge = node.inputs[index].edge;
  if (const auto& held = held_inputs(node)[index]) {
    autograd::ensure_resident(held->value);
    const uint32_t now = held->value.version();
    REMAT_CHECK(now == held->version,
                "checkpoint segment '{}': input {} of {}, a tensor from outside the segment "
                "(made by {}), was modified in place after the forward: it was at version {}, "
                "now at version {}",
                options_.tag, index, where(node),
                edge.producer ? fmt::format("op '{}'", edge.producer->op->name)
                              : std::string("no op: a leaf or constant"),
                held->version, now);
    return held->value;
  }
  if (!edge.producer) return {};  // an absent optional operand, or one the replay ignores
  const Source source = source_of(*edge.producer, edge.output_nr);
  auto it = values.find(source);
  REMAT_CHECK(it != values.end(), "checkpoint replay: input {} of {} was not regenerated", index,
              where(node));
  return it->second;
}

// The tensor an entry of the segment made, when it is still alive (the caller
// holds it) and unchanged since: the replay takes it instead of a second copy.
Tensor CheckpointSegment::live_value(const Node& producer, int output) const {
  std::shared_ptr<TensorImpl> impl = producer.outputs[static_cast<size_t>(output)].tensor.lock();
  if (!impl) return {};
  Tensor value(std::move(impl));
  const auto made = root_->made_at_version_.find(source_of(producer, output));
  if (made == root_->made_at_version_.end() || value.version() != made->second) return {};
  return value.detach();
}

void CheckpointSegment::replay(const EntrySet& reachable) {
  std::vector<DroppedSlot*> wanted;  // the empty slots of entries this backward runs
  for (DroppedSlot& slot : dropped_) {
    if (slot.restored) continue;
    auto node = slot.node.lock();
    if (node && !node->released && reachable.count(node.get())) wanted.push_back(&slot);
  }
  if (wanted.empty()) return;
  NoGradGuard no_grad;
  memory::TagScope tag("replay:" + options_.tag);

  // The entries to run: the producers of every value a wanted slot takes, and
  // what those need, down to values that are held or still alive.
  std::map<uint64_t, std::shared_ptr<Node>> to_run;
  std::map<Source, Tensor> values;
  std::vector<Node*> unexplored;
  auto want = [&](const std::shared_ptr<Node>& producer, Source source) {
    if (values.count(source)) return;
    if (Tensor live = live_value(*producer, source.output); live.defined()) {
      values.emplace(source, std::move(live));
      return;
    }
    REMAT_CHECK(!producer->released,
                "backward through {} a second time: the replay needs it, and the first backward "
                "freed what it kept; pass retain_graph=true to that one",
                where(*producer));
    if (to_run.emplace(producer->sequence, producer).second) unexplored.push_back(producer.get());
  };
  std::set<Source> restored;  // values that end in a slot
  for (const DroppedSlot* slot : wanted) {
    auto node = slot->node.lock();
    if (slot->kind == SlotKind::SavedInput && held_inputs(*node)[slot->index].has_value()) continue;
    restored.insert(slot->source);
    if (auto producer = slot->producer.lock()) want(producer, slot->source);
  }
  while (!unexplored.empty()) {  // a loop, not recursion: a segment may hold 1M entries
    Node* entry = unexplored.back();
    unexplored.pop_back();
    for (size_t k = 0; k < entry->inputs.size(); ++k) {
      const autograd::Edge& edge = entry->inputs[k].edge;
      if (held_inputs(*entry)[k].has_value() || !edge.producer) continue;
      REMAT_CHECK(contains(segment_of(*edge.producer)),
                  "checkpoint replay: {} needs a value from outside the segment that is gone",
                  where(*entry));
      want(edge.producer, source_of(*edge.producer, edge.output_nr));
    }
  }

  // Run them in tape order. A value that no slot takes is freed as soon as
  // its last reader has run, so a replay peaks at what backward needs plus
  // the working set of one entry.
  std::map<Source, int> readers;
  for (const auto& [sequence, entry] : to_run) {
    for (size_t k = 0; k < entry->inputs.size(); ++k) {
      const autograd::Edge& edge = entry->inputs[k].edge;
      if (!held_inputs(*entry)[k] && edge.producer) {
        ++readers[source_of(*edge.producer, edge.output_nr)];
      }
    }
  }
  for (const auto& [sequence, entry] : to_run) {
    std::vector<Tensor> inputs(entry->inputs.size());
    for (size_t k = 0; k < inputs.size(); ++k) inputs[k] = input_for_replay(*entry, k, values);
    std::vector<Tensor> outputs = ops::replay_forward(*entry->op, inputs, entry->attrs);
    ++thread_stats.ops_replayed;
    inputs.clear();
    for (size_t k = 0; k < entry->inputs.size(); ++k) {
      const autograd::Edge& edge = entry->inputs[k].edge;
      if (held_inputs(*entry)[k] || !edge.producer) continue;
      const Source source = source_of(*edge.producer, edge.output_nr);
      if (--readers[source] == 0 && !restored.count(source)) values.erase(source);
    }
    for (size_t j = 0; j < outputs.size(); ++j) {
      const Source source = source_of(*entry, static_cast<int>(j));
      if (readers.count(source) || restored.count(source)) {
        values.try_emplace(source, std::move(outputs[j]));
      }
    }
  }

  for (DroppedSlot* slot : wanted) {
    auto node = slot->node.lock();
    check_unchanged(*slot, "after the forward");
    Tensor value = slot->kind == SlotKind::SavedInput && held_inputs(*node)[slot->index]
                       ? input_for_replay(*node, slot->index, values)
                       : values.at(slot->source);
    if (options_.debug) {
      Fingerprint now = Fingerprint::of(value);
      const Fingerprint& then = slot->fingerprint;
      REMAT_CHECK(now.meta.shape == then.meta.shape && now.meta.dtype == then.meta.dtype &&
                      now.meta.device == then.meta.device && now.hash == then.hash,
                  "checkpoint replay diverged from the record at {} ({} {}): recorded {} (hash "
                  "{:016x}), replayed {} (hash {:016x})",
                  where(*node), slot_name(slot->kind == SlotKind::SavedOutput), slot->index,
                  then.meta.str(), then.hash, now.meta.str(), now.hash);
    }
    SavedTensor saved{value, value.version()};
    switch (slot->kind) {
      case SlotKind::SavedInput: node->inputs[slot->index].saved = saved; break;
      case SlotKind::SavedOutput: node->outputs[slot->index].saved = saved; break;
      case SlotKind::InputValue: held_inputs(*node)[slot->index] = saved; break;
    }
    slot->restored = true;
  }
  ++thread_stats.segments_replayed;
}

void CheckpointSegment::after_backward(bool retain_graph) {
  reached_ = false;
  if (packer_ && retain_graph) packer_->repack();
  if (retain_graph) {
    // Keep memory bounded for the next backward: drop again what replay made.
    for (DroppedSlot& slot : dropped_) {
      if (!slot.restored) continue;
      slot.restored = false;
      auto node = slot.node.lock();
      if (!node) continue;
      switch (slot.kind) {
        case SlotKind::SavedInput: node->inputs[slot.index].saved.reset(); break;
        case SlotKind::SavedOutput: node->outputs[slot.index].saved.reset(); break;
        case SlotKind::InputValue: held_inputs(*node)[slot.index].reset(); break;
      }
    }
  }
  if (parent_) parent_->after_backward(retain_graph);
}

}  // namespace remat::checkpointing
