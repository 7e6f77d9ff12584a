// A tape entry: one recorded op with what it needs to run backward (and, for
// checkpoint, to run its forward again).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "ops/registry.h"

namespace remat::autograd {

struct Node;

// A tensor a backward formula needs, with the version it had when saved so a
// later in-place change is caught instead of silently giving wrong gradients.
struct SavedTensor {
  Tensor value;  // detached: shares storage and version counter, not history
  uint32_t version = 0;
};

// Where an input's gradient goes: into output `output_nr` of the entry that
// produced it, or into the .grad of a leaf.
struct Edge {
  std::shared_ptr<Node> producer;
  int output_nr = 0;
  std::weak_ptr<TensorImpl> leaf;
  bool requires_grad = false;
};

// An entry's input: where its gradient goes, and its value where the op's
// backward reads it (empty otherwise, or once a segment dropped it).
struct NodeInput {
  Edge edge;
  std::optional<SavedTensor> saved;
};

// An entry's output: the tensor while it lives, its metadata, and its value
// where the op's backward reads it.
struct NodeOutput {
  std::weak_ptr<TensorImpl> tensor;
  TensorMeta meta;
  std::optional<SavedTensor> saved;
};

// A stretch of the tape that drops tensors during the forward and
// regenerates them before backward needs them. src/checkpoint implements it;
// the tape and the engine only call these hooks.
class Segment : public std::enable_shared_from_this<Segment> {
 public:
  virtual ~Segment() = default;
  // After record() has filled an entry made while this segment is the
  // thread's innermost active one: the segment decides what to drop.
  virtual void on_record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& outputs) = 0;
  // Before the engine unpacks the saved tensors of an entry of the segment
  // that lacks some: regenerate them. `pending` holds the other entries this
  // backward has still to run; with `node` they bound what is worth
  // regenerating (a branch no root reaches is left alone).
  virtual void materialize(Node& node, const std::vector<const Node*>& pending) = 0;
  // Before the engine runs the backward of an entry of the segment, whether
  // or not it lacks saved tensors.
  virtual void reached() = 0;
  // Once per backward pass, for every segment that materialised something.
  virtual void after_backward(bool retain_graph) = 0;
  // The segment as error messages name it.
  virtual std::string describe() const = 0;
};

// What a segment holds on one of its entries: the segment, and the values
// of the inputs it keeps for replay (those from outside it).
struct SegmentEntry {
  std::shared_ptr<Segment> segment;
  std::vector<std::optional<SavedTensor>> input_values;  // indexed like the entry's inputs
};

// What an entry needs to make its outputs again after the eviction mode
// (BudgetGuard, src/checkpoint/evict.cpp) freed them: its inputs, held, and
// the storages it allocated. Only entries recorded while a guard lives carry it.
struct Regeneration {
  std::vector<Tensor> inputs;                // detached, indexed like the entry's inputs
  std::vector<std::weak_ptr<Storage>> made;  // by output; empty where it is a view or in place
  int64_t cost_ns = 0;                       // the time its forward took
};

// The eviction mode's hooks into the tape, installed while a guard lives
// (the observer) and from the first guard on (the regenerator: an evicted
// storage may outlive its guard).
using RecordObserver = void (*)(const std::shared_ptr<Node>& node,
                                const std::vector<Tensor>& inputs,
                                const std::vector<Tensor>& outputs);
void set_record_observer(RecordObserver observer);
using Regenerator = void (*)(const std::shared_ptr<Storage>& storage);
void set_regenerator(Regenerator regenerator);
// Makes an evicted or packed storage of t resident again (a no-op otherwise):
// every read of a tensor the tape holds goes through it.
void ensure_resident(const Tensor& t);
// The tape position of the entry whose backward this thread runs now, or
// kNotInBackward: what the eviction mode orders next uses by.
inline constexpr uint64_t kNotInBackward = ~uint64_t{0};
uint64_t backward_cursor();

// The thread's innermost active segment (null outside checkpoint()).
Segment* active_segment();
class ActiveSegmentScope {
 public:
  explicit ActiveSegmentScope(Segment* segment);
  ~ActiveSegmentScope();
  ActiveSegmentScope(const ActiveSegmentScope&) = delete;
  ActiveSegmentScope& operator=(const ActiveSegmentScope&) = delete;

 private:
  Segment* previous_;
};

struct Node {
  Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Frees the chain of producers it alone owns without recursing: a graph of a
  // million entries would otherwise overflow the stack, one frame per entry.
  ~Node();  // counts itself out of live_entries()

  // Position on the tape, unique across threads (a graph may span threads: the
  // engine keys pending entries by it); inputs always come earlier.
  uint64_t sequence = 0;
  const ops::OpDef* op = nullptr;
  ops::Attrs attrs;
  std::vector<NodeInput> inputs;
  std::vector<TensorMeta> input_meta;  // indexed like inputs; what BackwardArgs shows
  std::vector<NodeOutput> outputs;
  bool released = false;  // saved tensors freed by a backward without retain_graph
  // Set only on entries made inside checkpoint(), so any other entry pays one
  // null pointer for checkpointing.
  std::unique_ptr<SegmentEntry> segment_entry;
  std::unique_ptr<Regeneration> regeneration;  // under a BudgetGuard only

  // The saved tensor, checked against in-place modification since it was saved.
  Tensor unpack(const std::optional<SavedTensor>& slot, const char* kind, size_t index) const;
  // Whether a tensor the op's backward reads is missing (a segment dropped it).
  bool lacks_saved_tensors() const;
  void release();
};

// The tape is not a list: entries are owned by the tensors they produced (and
// by later entries that consume those), so an entry whose results are gone
// frees itself. What stays global is a count of live entries (tests prove a
// graph freed with it) and the sequence counter, one for the process so that
// entries recorded on different threads never share a number and an entry
// always numbers after the inputs it read, whichever thread made them.
uint64_t next_sequence();
int64_t live_entries();

// Installed into the op dispatcher: records one call on the tape.
void record(const ops::OpDef& def, const std::vector<Tensor>& inputs, const ops::Attrs& attrs,
            std::vector<Tensor>& outputs);

}  // namespace remat::autograd
