// A checkpoint segment: the tape entries recorded inside one checkpoint()
// call. During the forward it keeps only values from outside the segment
// (its inputs, weights, constants) and, by policy, chosen ops' outputs; when
// backward reaches one of its entries it replays the entries that regenerate
// what was dropped, from the tape's record of ops, inputs and attributes.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "autograd/node.h"
#include "checkpoint/pack.h"
#include "remat/checkpoint.h"

namespace remat::checkpointing {

// A value on the tape: output `output` of the entry with this sequence number.
struct Source {
  uint64_t sequence = 0;
  int output = 0;
  friend auto operator<=>(const Source&, const Source&) = default;
};

// Shape, dtype, device and a hash of the bytes, to check a replay (debug).
struct Fingerprint {
  TensorMeta meta;
  uint64_t hash = 0;
  static Fingerprint of(const Tensor& t);
};

class CheckpointSegment final : public autograd::Segment {
 public:
  CheckpointSegment(std::shared_ptr<CheckpointSegment> parent, CheckpointOptions options);
  ~CheckpointSegment() override;
  CheckpointSegment(const CheckpointSegment&) = delete;
  CheckpointSegment& operator=(const CheckpointSegment&) = delete;

  void on_record(const std::shared_ptr<autograd::Node>& node, const std::vector<Tensor>& inputs,
                 const std::vector<Tensor>& outputs) override;
  void materialize(autograd::Node& node,
                   const std::vector<const autograd::Node*>& pending) override;
  void reached() override;
  void after_backward(bool retain_graph) override;
  std::string describe() const override;
  // The forward has left the segment: check that nothing it dropped was
  // modified in place before it died.
  void close();

  // The innermost checkpoint segment active on this thread, if any.
  static std::shared_ptr<CheckpointSegment> active();

 private:
  enum class SlotKind { SavedInput, SavedOutput, InputValue };
  // A slot of an entry this segment empties in the forward and refills on
  // replay, with what is needed to check the refill.
  struct DroppedSlot {
    std::weak_ptr<autograd::Node> node;
    SlotKind kind;
    size_t index;
    Source source;
    std::weak_ptr<autograd::Node> producer;
    std::weak_ptr<Storage> storage;  // to catch in-place changes while it lives
    uint32_t version = 0;
    Fingerprint fingerprint;  // debug only
    bool restored = false;    // refilled by a replay and not dropped again since
  };
  using EntrySet = std::unordered_set<const autograd::Node*>;

  bool contains(const CheckpointSegment* other) const;
  void pack_kept(autograd::Node& node);
  void prefetch_ahead();
  CheckpointSegment* restoring_segment(const autograd::Node& producer);
  void drop(const std::shared_ptr<autograd::Node>& node, SlotKind kind, size_t index,
            const std::shared_ptr<autograd::Node>& producer, Source source, const Tensor& value,
            CheckpointSegment* owner);
  Tensor input_for_replay(const autograd::Node& node, size_t index,
                          const std::map<Source, Tensor>& values) const;
  Tensor live_value(const autograd::Node& producer, int output) const;
  EntrySet entries_to_run(const autograd::Node& node,
                          const std::vector<const autograd::Node*>& pending) const;
  void replay(const EntrySet& reachable);
  void check_unchanged(const DroppedSlot& slot, const char* when) const;
  std::string where(const autograd::Node& node) const;

  std::shared_ptr<CheckpointSegment> parent_;
  CheckpointSegment* root_;
  int depth_;
  CheckpointOptions options_;
  uint64_t first_sequence_ = 0;
  uint64_t last_sequence_ = 0;
  bool recorded_any_ = false;
  bool reached_ = false;  // by the current backward pass (on_backward was called)
  std::vector<DroppedSlot> dropped_;
  // Root only: outputs kept by policy. The values themselves are held by the
  // entries that read them (SegmentEntry::input_values), so they go when those are done.
  std::set<Source> kept_;
  // Root only: the version every output of an entry inside had when it was
  // made. A replay recomputes that version, so a later read must see it too.
  std::map<Source, uint32_t> made_at_version_;
  // Where the policy keeps activations off the device: what this segment's
  // own entries keep is packed here (nested segments have their own).
  std::unique_ptr<Packer> packer_;
};

// This thread's replay counters.
CheckpointStats current_stats();
void reset_stats();

}  // namespace remat::checkpointing
