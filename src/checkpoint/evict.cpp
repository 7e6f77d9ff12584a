// The eviction mode (BudgetGuard). While a guard lives, every tape entry
// recorded (inside checkpoint segments too) holds its inputs for regeneration
// (autograd::Regeneration), and each storage it allocates gets a record here:
// its creator, its size, the cost of making it again, and the tensors of it
// the tape holds (saved for backward, or held to regenerate a later entry).
// A storage that only the tape holds can be evicted: its memory is freed and
// the Storage object stays as a placeholder, so every view of it survives.
// When the tape reads it again, its creator (and, first, every evicted
// creator it needs) runs its forward again and the new memory moves into
// the placeholder: the same kernels on the same inputs with the same
// attributes, so the bytes are the ones evicted.
#include <algorithm>
#include <deque>
#include <mutex>
#include <span>
#include <unordered_map>

#include "autograd/node.h"
#include "memory/caching_allocator.h"
#include "ops/registry.h"
#include "remat/checkpoint.h"
#include "remat/core/grad_mode.h"

namespace remat {
namespace checkpointing {
namespace {

using autograd::Node;

// A tensor the tape holds of a storage.
struct TapeView {
  std::weak_ptr<TensorImpl> impl;
  uint64_t reader = 0;              // the entry holding it
  bool for_backward = false;        // saved for the reader's backward, not only to regenerate it
  std::weak_ptr<Node> regenerates;  // otherwise: the entry whose regeneration reads it
};

struct StorageRecord {
  std::weak_ptr<Storage> storage;
  Device device = kCPU;
  std::weak_ptr<Node> creator;
  uint32_t version_made = 0;  // a storage changed in place since is not the creator's output
  int64_t bytes = 0;
  int64_t cost_ns = 0;    // the creator's forward
  uint64_t last_use = 0;  // the tape position that last read or made it
  std::vector<TapeView> views;
};

int64_t storage_bytes(const Storage& s) { return s.data.size(); }

class Evictor;

struct State {
  std::mutex mutex;
  std::unordered_map<const Storage*, StorageRecord> records;
  size_t records_after_prune = 0;
  uint64_t clock = 0;  // the latest tape position recorded under a guard
  int guards = 0;      // on every device
  std::vector<std::unique_ptr<Evictor>> evictors;
  std::deque<std::weak_ptr<Storage>> recent;  // made or regenerated, to free once dead
};

State& state() {
  static State s;
  return s;
}

void prune_locked(State& s) {
  for (auto it = s.records.begin(); it != s.records.end();) {
    it = it->second.storage.expired() ? s.records.erase(it) : std::next(it);
  }
  s.records_after_prune = s.records.size();
}

// The record of a storage, if it has a current one (a dead storage's address
// may have been reused).
StorageRecord* record_of(State& s, const std::shared_ptr<Storage>& storage) {
  auto it = s.records.find(storage.get());
  if (it == s.records.end()) return nullptr;
  if (it->second.storage.lock() != storage) {
    s.records.erase(it);
    return nullptr;
  }
  return &it->second;
}

void add_view(State& s, const Tensor& t, const std::shared_ptr<Node>& reader, bool for_backward) {
  if (!t.defined()) return;
  if (StorageRecord* r = record_of(s, t.impl().storage)) {
    r->views.push_back({.impl = t.impl_ptr(),
                        .reader = reader->sequence,
                        .for_backward = for_backward,
                        .regenerates = for_backward ? std::weak_ptr<Node>() : reader});
  }
}

// Whether output y is a fresh storage the entry allocated (not a view of an
// input, not written in place), which its forward can make again.
bool makes_storage(const Tensor& y, const std::vector<Tensor>& inputs) {
  if (!y.defined() || y.offset() != 0 || !y.is_contiguous()) return false;
  const Storage& storage = *y.impl().storage;
  if (storage.evicted || y.nbytes() == 0 || y.nbytes() != storage_bytes(storage)) return false;
  return std::none_of(inputs.begin(), inputs.end(),
                      [&](const Tensor& x) { return x.defined() && x.is_alias_of(y); });
}

// Whether only the tape holds the storage (no handle of the caller's, no
// operand of a running op), its creator can still run, and it is unchanged.
bool evictable(StorageRecord& r, const std::shared_ptr<Storage>& storage) {
  if (storage->evicted || storage->version.load() != r.version_made) return false;
  std::shared_ptr<Node> creator = r.creator.lock();
  if (!creator || creator->released || !creator->regeneration) return false;
  std::erase_if(r.views, [](const TapeView& v) { return v.impl.expired(); });
  long tape_held = 0;
  for (const TapeView& v : r.views) {
    // Held by its slot alone (a strong count of 1), not also by a running op.
    if (v.impl.use_count() != 1) return false;
    ++tape_held;
  }
  return storage.use_count() - 1 == tape_held;  // -1: the caller's lock
}

bool read_by_backward(const StorageRecord& r) {
  return std::any_of(r.views.begin(), r.views.end(),
                     [](const TapeView& v) { return v.for_backward && !v.impl.expired(); });
}

void evict(const StorageRecord& r, Storage& storage) {
  memory::TagScope tag("evict");
  storage.data = memory::Allocation();
  storage.evicted = true;
  memory::allocator_for(r.device).count_eviction(r.bytes);
}

// A value the tape holds only to regenerate others (no backward reads it, no
// handle outside the tape holds it) is one plain training would have freed
// when the forward moved past it: the guard frees it too, so that the live
// set is plain training's, and makes it again only for a regeneration that
// needs it. Looks at the `looks` oldest values made or regenerated recently;
// one still held outside the tape goes to the back of the queue.
void free_dead_values_locked(State& s, size_t looks) {
  for (size_t look = 0; look < looks && !s.recent.empty(); ++look) {
    std::weak_ptr<Storage> next = std::move(s.recent.front());
    s.recent.pop_front();
    std::shared_ptr<Storage> storage = next.lock();
    if (!storage || storage->evicted) continue;
    StorageRecord* r = record_of(s, storage);
    if (r == nullptr || read_by_backward(*r)) continue;  // saved for backward: pressure decides
    if (evictable(*r, storage)) {
      evict(*r, *storage);
    } else {
      s.recent.push_back(std::move(next));
    }
  }
}

// Makes the entry a creator: it holds its inputs to run again, and each
// storage it allocated gets a record. Entries inside checkpoint segments too:
// what their segment drops is dead to backward and freed at once, and what it
// leaves (block outputs, values a policy keeps) can then be evicted and made
// again along the tape like any other value.
void make_creator(State& s, const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                  const std::vector<Tensor>& outputs) {
  auto regen = std::make_unique<autograd::Regeneration>();
  regen->cost_ns = ops::last_forward_ns();
  regen->inputs.resize(inputs.size());
  regen->made.resize(outputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].defined()) regen->inputs[i] = inputs[i].detach();
  }
  for (size_t j = 0; j < outputs.size(); ++j) {
    const Tensor& y = outputs[j];
    if (!makes_storage(y, inputs)) continue;
    const std::shared_ptr<Storage>& storage = y.impl().storage;
    regen->made[j] = storage;
    s.recent.push_back(storage);
    s.records[storage.get()] = StorageRecord{.storage = storage,
                                             .device = y.device(),
                                             .creator = node,
                                             .version_made = y.version(),
                                             .bytes = storage_bytes(*storage),
                                             .cost_ns = regen->cost_ns,
                                             .last_use = node->sequence,
                                             .views = {}};
  }
  for (const Tensor& x : regen->inputs) add_view(s, x, node, false);
  node->regeneration = std::move(regen);
}

// The record observer: called for every entry recorded while a guard lives.
void observe(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
             const std::vector<Tensor>& outputs) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  const uint64_t at = node->sequence;
  s.clock = std::max(s.clock, at);
  if (s.records.size() > 2 * s.records_after_prune + 4096) prune_locked(s);
  for (const Tensor& x : inputs) {
    if (!x.defined()) continue;
    if (StorageRecord* r = record_of(s, x.impl().storage)) r->last_use = at;
  }
  make_creator(s, node, inputs, outputs);
  for (const autograd::NodeInput& in : node->inputs) {
    if (in.saved) add_view(s, in.saved->value, node, true);
  }
  for (const autograd::NodeOutput& out : node->outputs) {
    if (out.saved) add_view(s, out.saved->value, node, true);
  }
  if (node->segment_entry) {
    for (const auto& held : node->segment_entry->input_values) {
      if (held) add_view(s, held->value, node, true);
    }
  }
  free_dead_values_locked(s, 2);  // a record makes about one value: the queue stays short
}

using CostMemo = std::unordered_map<const StorageRecord*, double>;

// What making a value again costs: its creator's forward and, first, the
// same for each of the creator's inputs that is evicted too.
double regeneration_cost(const State& s, const StorageRecord& r, CostMemo& memo) {
  if (auto known = memo.find(&r); known != memo.end()) return known->second;
  double cost = static_cast<double>(r.cost_ns) + 1000.0;
  if (std::shared_ptr<Node> creator = r.creator.lock(); creator && creator->regeneration) {
    for (const Tensor& x : creator->regeneration->inputs) {
      if (!x.defined() || !x.impl().storage->evicted) continue;
      auto it = s.records.find(x.impl().storage.get());
      if (it != s.records.end()) cost += regeneration_cost(s, it->second, memo);
    }
  }
  memo[&r] = cost;
  return cost;
}

// How many evicted values would need this one made again first.
int evicted_dependents(const StorageRecord& r) {
  int count = 0;
  for (const TapeView& v : r.views) {
    std::shared_ptr<Node> entry = v.regenerates.lock();
    if (!entry || !entry->regeneration) continue;
    for (const auto& made : entry->regeneration->made) {
      std::shared_ptr<Storage> output = made.lock();
      if (output && output->evicted) ++count;
    }
  }
  return count;
}

// Larger is evicted first: bytes freed per nanosecond of regeneration, times
// how far off the next use is. In backward the tape knows the order (entries
// run in decreasing position, so the next use is the largest reader not past
// the cursor): farthest next use first, as Belady's rule. In the forward the
// future is unknown: staleness, as DTR's heuristic. A tensor held only to
// regenerate others has no next use of its own.
double eviction_score(const State& s, const StorageRecord& r, CostMemo& memo) {
  constexpr double kNoUse = 1e15;
  const uint64_t cursor = autograd::backward_cursor();
  bool used = false;
  uint64_t next = 0;
  for (const TapeView& v : r.views) {
    if (!v.for_backward || (cursor != autograd::kNotInBackward && v.reader > cursor)) continue;
    used = true;
    next = std::max(next, v.reader);
  }
  double distance = kNoUse;
  if (used) {
    distance = cursor != autograd::kNotInBackward
                   ? static_cast<double>(cursor - next) + 1.0
                   : static_cast<double>(s.clock - std::min(s.clock, r.last_use)) + 1.0;
  }
  // The cost of the evicted neighbourhood, as DTR's e*: regenerating it
  // regenerates its evicted ancestors, and each evicted value that reads it
  // would have to make it again first.
  const double cost = regeneration_cost(s, r, memo) * (1 + evicted_dependents(r));
  return static_cast<double>(r.bytes) * distance / cost;
}

// How far down the ranking a tensor whose block serves the request may be
// taken ahead of the best-scored one: any further and its cost outweighs the
// fragmentation it saves (on the 16-block transformer at the block plan's
// limit, 8 regenerated 10% fewer bytes per step than the whole ranking and
// about as few as 4 or 16).
constexpr size_t kFragmentationCandidates = 8;

class Evictor final : public memory::PressureRelief {
 public:
  explicit Evictor(Device device) : device_(device) {}
  Device device() const { return device_; }
  int guards = 0;

  bool relieve(int64_t bytes) override {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    struct Candidate {
      double score;
      std::shared_ptr<Storage> storage;
      StorageRecord* record;
    };
    std::vector<Candidate> candidates;
    CostMemo memo;
    for (auto it = s.records.begin(); it != s.records.end();) {
      std::shared_ptr<Storage> storage = it->second.storage.lock();
      if (!storage) {
        it = s.records.erase(it);
        continue;
      }
      StorageRecord& r = it->second;
      if (r.device == device_ && evictable(r, storage)) {
        const double score = eviction_score(s, r, memo);
        candidates.push_back({score, std::move(storage), &r});
      }
      ++it;
    }
    s.records_after_prune = s.records.size();
    if (candidates.empty()) return false;
    std::sort(candidates.begin(), candidates.end(),
              [](const Candidate& a, const Candidate& b) { return a.score > b.score; });
    memory::CachingAllocator& allocator = memory::allocator_for(device_);
    // Fragmentation: among the best-scored, a tensor whose block lets the
    // request be served goes first; only when none alone does, the
    // best-scored one makes progress.
    const Candidate* pick = &candidates.front();
    const size_t considered = std::min<size_t>(candidates.size(), kFragmentationCandidates);
    for (const Candidate& c : std::span(candidates).first(considered)) {
      if (allocator.frees_room_for(c.storage->data, bytes)) {
        pick = &c;
        break;
      }
    }
    evict(*pick->record, *pick->storage);
    return true;
  }

  std::string unevictable() const override {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    int64_t held_outside = 0;
    int64_t held_count = 0;
    for (const auto& [address, r] : s.records) {
      std::shared_ptr<Storage> storage = r.storage.lock();
      if (!storage || storage->evicted || r.device != device_) continue;
      held_outside += r.bytes;
      ++held_count;
    }
    const memory::Stats now = memory::allocator_for(device_).stats();
    return fmt::format(
        "nothing is left to evict: of {} allocated bytes, {} are in {} tensors the tape could "
        "regenerate but that are in use (operands of the running op, handles the caller "
        "holds, or written in place), and {} cannot be regenerated (parameters, gradients, "
        "optimizer state, inputs, what a checkpoint replay made, tensors made outside a "
        "BudgetGuard)",
        now.allocated_bytes.current, held_outside, held_count,
        now.allocated_bytes.current - held_outside);
  }

 private:
  Device device_;
};

Evictor& evictor_for(State& s, Device d) {
  for (auto& e : s.evictors) {
    if (e->device() == d) return *e;
  }
  return *s.evictors.emplace_back(std::make_unique<Evictor>(d));
}

// The regenerator: makes an evicted storage resident again by running its
// creator, first regenerating (recursively) the creator's inputs that are
// evicted too. The inputs stay pinned (held here) while it runs, so an
// eviction its allocations cause cannot take them; along a chain only the
// input being made and the one that reads it are resident at once.
thread_local int regeneration_depth = 0;

void regenerate(const std::shared_ptr<Storage>& target) {
  NoGradGuard no_grad;
  memory::TagScope tag("regenerate");
  State& s = state();
  std::shared_ptr<Node> creator;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    StorageRecord* r = record_of(s, target);
    REMAT_CHECK(r != nullptr, "an evicted tensor has no record of the entry that made it");
    creator = r->creator.lock();
    REMAT_CHECK(creator && creator->regeneration && !creator->released,
                "an evicted tensor's creator is gone: it cannot be regenerated");
  }
  const autograd::Regeneration& regen = *creator->regeneration;
  std::vector<std::shared_ptr<Storage>> pinned;
  std::vector<Tensor> outputs;
  {
    ++regeneration_depth;
    struct Leave {
      ~Leave() { --regeneration_depth; }
    } leave;
    for (const Tensor& x : regen.inputs) {
      if (!x.defined()) continue;
      pinned.push_back(x.impl().storage);
      if (x.impl().storage->evicted) regenerate(x.impl().storage);
    }
    outputs = ops::replay_forward(*creator->op, regen.inputs, creator->attrs);
  }
  pinned.clear();
  std::lock_guard<std::mutex> lock(s.mutex);
  // Every evicted output comes back, not only the one asked for.
  for (size_t j = 0; j < regen.made.size() && j < outputs.size(); ++j) {
    std::shared_ptr<Storage> made = regen.made[j].lock();
    if (!made || !made->evicted) continue;
    StorageRecord* r = record_of(s, made);
    memory::Allocation& fresh = outputs[j].impl().storage->data;
    REMAT_CHECK(r != nullptr && fresh.size() == r->bytes,
                "regenerating output {} of op '{}' made {} bytes, not the {} evicted", j,
                creator->op->name, fresh.size(), r ? r->bytes : 0);
    made->data = std::move(fresh);
    made->evicted = false;
    r->last_use = s.clock;
    s.recent.push_back(made);
    memory::allocator_for(r->device).count_regeneration(r->bytes);
  }
  // Once the whole chain has run, what it made only to feed the next link is dead again.
  if (regeneration_depth == 0) free_dead_values_locked(s, s.recent.size());
}

}  // namespace
}  // namespace checkpointing

BudgetGuard::BudgetGuard(Device device, int64_t bytes) : device_(device) {
  REMAT_CHECK(bytes > 0, "BudgetGuard on {}: the limit must be positive, got {}", device, bytes);
  memory::CachingAllocator& allocator = memory::allocator_for(device);
  if (allocator.stats().reserved_bytes.current > bytes) allocator.empty_cache();
  const memory::Stats now = allocator.stats();
  REMAT_CHECK(now.reserved_bytes.current <= bytes,
              "BudgetGuard on {}: the limit of {} bytes is below the {} bytes already in use",
              device, bytes, now.reserved_bytes.current);
  previous_limit_ = now.memory_limit;
  allocator.set_memory_limit(bytes);
  checkpointing::State& s = checkpointing::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  checkpointing::Evictor& evictor = checkpointing::evictor_for(s, device);
  if (evictor.guards++ == 0) allocator.set_pressure_relief(&evictor);
  if (s.guards++ == 0) {
    autograd::set_regenerator(&checkpointing::regenerate);
    autograd::set_record_observer(&checkpointing::observe);
    ops::time_forwards(true);
  }
}

BudgetGuard::~BudgetGuard() {
  memory::CachingAllocator& allocator = memory::allocator_for(device_);
  allocator.set_memory_limit(previous_limit_);
  checkpointing::State& s = checkpointing::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (--checkpointing::evictor_for(s, device_).guards == 0) allocator.set_pressure_relief(nullptr);
  if (--s.guards == 0) {
    autograd::set_record_observer(nullptr);
    ops::time_forwards(false);
  }
}

}  // namespace remat
