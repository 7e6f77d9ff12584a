// The caching allocator (see caching_allocator.h for the policy). Blocks are
// records of a piece of a segment; the free ones sit in their pool's set,
// ordered by (stream, size, address) so a lower_bound is a best fit on the
// stream. Every block keeps its neighbours in the segment, so a freed block
// merges with them in O(1).
#include "caching_allocator.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <string_view>
#include <utility>

#include "remat/core/error.h"

namespace remat::memory {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kMinBlockSize = 512;         // every size is rounded up to this
constexpr int64_t kSmallSize = 1 * kMiB;       // largest request served by the small pool
constexpr int64_t kSmallBuffer = 2 * kMiB;     // segment size of the small pool
constexpr int64_t kMinLargeAlloc = 10 * kMiB;  // large requests below this share...
constexpr int64_t kLargeBuffer = 20 * kMiB;    // ...segments of this size
constexpr int64_t kRoundLarge = 2 * kMiB;      // larger requests get their own segment
// Requests above this could overflow the rounding; no backend can serve them.
constexpr int64_t kMaxRequest = int64_t{1} << 60;

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

int64_t round_size(int64_t bytes) {
  return std::max(kMinBlockSize, round_up(bytes, kMinBlockSize));
}

int64_t segment_size_for(int64_t rounded) {
  if (rounded <= kSmallSize) return kSmallBuffer;
  if (rounded < kMinLargeAlloc) return kLargeBuffer;
  return round_up(rounded, kRoundLarge);
}

// The smallest segment that can serve a request: what a tight limit gets.
int64_t smallest_segment_for(int64_t rounded) {
  return rounded <= kSmallSize ? kSmallBuffer : round_up(rounded, kRoundLarge);
}

std::string format_bytes(int64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(kUnits)) {
    value /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.2f} {}", value, kUnits[unit]);
}

void increase(Stat& stat, int64_t amount) {
  stat.current += amount;
  stat.allocated += amount;
  stat.peak = std::max(stat.peak, stat.current);
}

void decrease(Stat& stat, int64_t amount) {
  stat.current -= amount;
  stat.freed += amount;
}

struct BlockPool;

struct Block {
  // nullptr once the allocator was destroyed while this block was live; its
  // Allocation then only deletes the record (see ~Impl).
  CachingAllocator* owner = nullptr;
  BlockPool* pool = nullptr;
  char* ptr = nullptr;
  int64_t size = 0;
  int64_t requested = 0;  // bytes asked for; 0 once back in the pool
  bool allocated = false;
  // The stream of the block's segment (nullptr: the default stream, and every
  // block of a host backend). Split blocks inherit it, so neighbours share it.
  void* stream = nullptr;
  std::vector<void*> stream_uses;  // other streams it was recorded on (record_stream)
  int event_count = 0;             // events pending since it was freed
  Block* prev = nullptr;           // neighbours within the same segment, in address order
  Block* next = nullptr;
};

// In the pool: freed, and no other stream may still be using it.
bool is_free(const Block* b) { return !b->allocated && b->event_count == 0; }

struct ByStreamSizeAddress {
  bool operator()(const Block* a, const Block* b) const {
    if (a->stream != b->stream) return std::less<void*>()(a->stream, b->stream);
    return a->size != b->size ? a->size < b->size : std::less<char*>()(a->ptr, b->ptr);
  }
};

struct BlockPool {
  explicit BlockPool(bool small) : is_small(small) {}
  std::set<Block*, ByStreamSizeAddress> free_blocks;
  const bool is_small;
};

// A segment's first block never goes away while the segment lives: merging
// always keeps the lower-addressed block.
struct MemorySegment {
  Block* first = nullptr;
  int64_t size = 0;
};

bool wholly_free(const MemorySegment& segment) {
  return is_free(segment.first) && segment.first->next == nullptr;
}

}  // namespace

struct CachingAllocator::Impl {
  Impl(CachingAllocator* self_, std::unique_ptr<RawBackend> backend_)
      : self(self_),
        backend(std::move(backend_)),
        stream_events(dynamic_cast<StreamEvents*>(backend.get())),
        device(backend->device()) {}

  ~Impl() {
    try {
      synchronize_and_free_events();
    } catch (const Error&) {
      // The device failed: its segments are leaked below rather than freed
      // under work that may still read them.
    }
    for (auto& [base, segment] : segments) {
      bool in_use = false;
      for (Block* b = segment.first; b != nullptr; b = b->next) in_use = in_use || !is_free(b);
      // A segment with live blocks is leaked: something still points into it,
      // and at process exit the static destruction order is not ours to pick.
      if (!in_use) backend->raw_free(base, static_cast<size_t>(segment.size));
      for (Block* b = segment.first; b != nullptr;) {
        Block* next = b->next;
        if (b->allocated) {
          b->owner = nullptr;
        } else {
          delete b;
        }
        b = next;
      }
    }
  }

  Block* allocate(int64_t bytes) {
    void* stream = stream_events != nullptr ? stream_events->current_stream() : nullptr;
    std::unique_lock<std::mutex> lock(mutex);
    if (bytes > kMaxRequest) throw_oom(bytes, "the request is larger than any segment");
    process_events();
    int64_t size = round_size(bytes);
    BlockPool& pool = size <= kSmallSize ? small_pool : large_pool;
    // An injected failure is refused where the limit refuses a request, after
    // the same retry, so the caller's recovery is the one a real OOM meets.
    const bool injected = fail_countdown > 0 && --fail_countdown == 0;
    Block* block = injected ? nullptr : take_best_fit(pool, size, stream);
    if (block == nullptr && !injected) block = new_segment(pool, size, stream);
    if (block == nullptr) {
      // Memory pressure: wait for the blocks other streams still hold, give
      // the cache back and try once more.
      ++stats.num_alloc_retries;
      synchronize_and_free_events();
      block = injected ? nullptr : take_best_fit(pool, size, stream);
      if (block == nullptr) {
        release_free_segments();
        if (!injected) block = new_segment(pool, size, stream);
      }
    }
    if (block == nullptr && !injected && borrows_large_pool(size)) {
      block = take_best_fit(large_pool, size, stream);
    }
    std::string unevictable;
    if (block == nullptr && !injected && relief != nullptr) {
      // The eviction mode: free tape tensors until the request fits.
      while (block == nullptr) {
        PressureRelief* asked = relief;
        lock.unlock();
        const bool freed = asked->relieve(size);
        if (!freed) unevictable = asked->unevictable();
        lock.lock();
        if (!freed) break;
        process_events();
        block = take_best_fit(pool, size, stream);
        if (block == nullptr && borrows_large_pool(size)) {
          block = take_best_fit(large_pool, size, stream);
        }
        if (block == nullptr) {
          release_free_segments();
          block = new_segment(pool, size, stream);
        }
      }
    }
    if (block == nullptr) {
      std::string cause = refusal(size, injected);
      if (!unevictable.empty()) {
        cause += fmt::format(
            "; {}; a limit of at least {} bytes would serve this request as "
            "memory stands",
            unevictable, stats.reserved_bytes.current + smallest_segment_for(size));
      }
      throw_oom(bytes, cause);
    }
    split(block, size);
    block->allocated = true;
    block->requested = bytes;
    increase(stats.allocated_bytes, block->size);
    for (int64_t* peak : watches) *peak = std::max(*peak, stats.allocated_bytes.current);
    increase(stats.active_bytes, block->size);
    increase(stats.requested_bytes, bytes);
    increase(stats.allocation_count, 1);
    record(EventKind::Alloc, block->size, block->ptr, bytes);
    return block;
  }

  // Allocated bytes and count drop at once; a block other streams may still
  // use stays active (and out of the pool) until their events complete.
  void free(Block* block) {
    std::lock_guard<std::mutex> lock(mutex);
    decrease(stats.allocated_bytes, block->size);
    decrease(stats.allocation_count, 1);
    block->allocated = false;
    record(EventKind::Free, block->size, block->ptr, block->requested);
    if (block->stream_uses.empty()) {
      return_to_pool(block);
      return;
    }
    try {
      insert_events(block);
    } catch (const Error&) {
      // Called from ~Allocation, which must not throw. A device that cannot
      // record an event is broken: keeping the block out of the pool for good
      // (an event count nothing releases) is safe, reusing it is not.
      ++block->event_count;
    }
  }

  void record_stream(Block* block, const Stream& stream) {
    std::lock_guard<std::mutex> lock(mutex);
    REMAT_CHECK(block->allocated, "record_stream on {}: the block was freed", device);
    REMAT_CHECK(stream_events != nullptr && stream.device() == device,
                "record_stream: the memory is on {} ({}), the stream on {}", device,
                backend->name(), stream.device());
    void* handle = stream.handle();
    if (handle == block->stream) return;  // its own stream orders its uses already
    auto& uses = block->stream_uses;
    if (std::find(uses.begin(), uses.end(), handle) == uses.end()) uses.push_back(handle);
  }

  void return_to_pool(Block* block) {
    decrease(stats.active_bytes, block->size);
    decrease(stats.requested_bytes, block->requested);
    block->requested = 0;
    BlockPool& pool = *block->pool;
    if (block->prev != nullptr && is_free(block->prev)) block = merge_into_prev(pool, block);
    if (block->next != nullptr && is_free(block->next)) merge_into_prev(pool, block->next);
    pool.free_blocks.insert(block);
  }

  // One event per stream the freed block was recorded on.
  void insert_events(Block* block) {
    std::vector<void*> uses = std::move(block->stream_uses);
    block->stream_uses.clear();
    for (void* stream : uses) {
      void* event = stream_events->record_event(stream);
      pending[stream].emplace_back(event, block);
      ++block->event_count;
    }
  }

  // Returns the blocks whose events have all completed to the pool. Events of
  // one stream complete in the order they were recorded, so each stream's
  // queue is read from the front until the first one still pending.
  void process_events() {
    for (auto it = pending.begin(); it != pending.end();) {
      auto& queue = it->second;
      while (!queue.empty() && stream_events->event_done(queue.front().first)) {
        auto [event, block] = queue.front();
        queue.pop_front();
        release(event, block);
      }
      it = queue.empty() ? pending.erase(it) : std::next(it);
    }
  }

  // empty_cache and the out-of-memory retry: wait for every pending event.
  void synchronize_and_free_events() {
    while (!pending.empty()) {
      auto& queue = pending.begin()->second;
      while (!queue.empty()) {
        auto [event, block] = queue.front();
        stream_events->synchronize_event(event);
        queue.pop_front();
        release(event, block);
      }
      pending.erase(pending.begin());
    }
  }

  void release(void* event, Block* block) {
    stream_events->release_event(event);
    if (--block->event_count == 0) return_to_pool(block);
  }

  // Best fit on the stream: its smallest free block that is large enough,
  // lowest address first.
  Block* take_best_fit(BlockPool& pool, int64_t size, void* stream) {
    Block key;
    key.size = size;
    key.stream = stream;
    auto it = pool.free_blocks.lower_bound(&key);
    if (it == pool.free_blocks.end() || (*it)->stream != stream) return nullptr;
    Block* block = *it;
    pool.free_blocks.erase(it);
    return block;
  }

  bool over_limit(int64_t segment_size) const {
    return stats.memory_limit > 0 &&
           stats.reserved_bytes.current + segment_size > stats.memory_limit;
  }

  // Under a memory limit, a small request that finds no block in its pool
  // and no room for a new segment takes one from the large pool's free
  // blocks rather than fail beside them.
  bool borrows_large_pool(int64_t size) const {
    return size <= kSmallSize && stats.memory_limit > 0;
  }

  // The segment a request of `size` (rounded) gets: segment_size_for's,
  // unless that would pass the memory limit where a large request's own
  // size in 2 MiB would not (the shared 20 MiB segment is a speed choice a
  // tight limit cannot afford).
  int64_t segment_size_under_limit(int64_t size) const {
    const int64_t usual = segment_size_for(size);
    return over_limit(usual) ? smallest_segment_for(size) : usual;
  }

  // A fresh segment as one block (not in the free set), or nullptr when the
  // limit or the backend says no.
  Block* new_segment(BlockPool& pool, int64_t size, void* stream) {
    const int64_t segment_size = segment_size_under_limit(size);
    if (over_limit(segment_size)) return nullptr;
    auto* base = static_cast<char*>(backend->raw_alloc(static_cast<size_t>(segment_size)));
    if (base == nullptr) return nullptr;
    ++stats.num_raw_allocs;
    increase(stats.reserved_bytes, segment_size);
    increase(stats.segment_count, 1);
    auto* block = new Block{
        .owner = self, .pool = &pool, .ptr = base, .size = segment_size, .stream = stream};
    segments.emplace(base, MemorySegment{.first = block, .size = segment_size});
    record(EventKind::SegmentAlloc, segment_size, base);
    return block;
  }

  // Cuts block down to size when the rest is worth keeping as a free block; in
  // the large pool a remainder of 1 MiB or less stays with the block.
  void split(Block* block, int64_t size) {
    int64_t remaining = block->size - size;
    bool worth_it = block->pool->is_small ? remaining >= kMinBlockSize : remaining > kSmallSize;
    if (!worth_it) return;
    auto* rest = new Block{.owner = self,
                           .pool = block->pool,
                           .ptr = block->ptr + size,
                           .size = remaining,
                           .stream = block->stream,
                           .prev = block,
                           .next = block->next};
    if (block->next != nullptr) block->next->prev = rest;
    block->next = rest;
    block->size = size;
    block->pool->free_blocks.insert(rest);
  }

  // Folds free `block` into its free predecessor (taken out of the free set,
  // since its size changes) and returns the predecessor.
  Block* merge_into_prev(BlockPool& pool, Block* block) {
    Block* prev = block->prev;
    pool.free_blocks.erase(prev);
    pool.free_blocks.erase(block);
    prev->size += block->size;
    prev->next = block->next;
    if (block->next != nullptr) block->next->prev = prev;
    delete block;
    return prev;
  }

  void release_free_segments() {
    for (auto it = segments.begin(); it != segments.end();) {
      if (!wholly_free(it->second)) {
        ++it;
        continue;
      }
      auto [base, segment] = *it;
      segment.first->pool->free_blocks.erase(segment.first);
      delete segment.first;
      backend->raw_free(base, static_cast<size_t>(segment.size));
      ++stats.num_raw_frees;
      decrease(stats.reserved_bytes, segment.size);
      decrease(stats.segment_count, 1);
      record(EventKind::SegmentFree, segment.size, base);
      it = segments.erase(it);
    }
  }

  // Why a request of `size` (rounded) found no block.
  std::string refusal(int64_t size, bool injected) const {
    if (injected) return "an injected failure: memory::FailAllocationScope";
    const int64_t segment_size = segment_size_under_limit(size);
    if (over_limit(segment_size)) {
      return fmt::format("a new {} segment would pass the limit", format_bytes(segment_size));
    }
    return fmt::format("the {} backend has no {} segment to give", backend->name(),
                       format_bytes(segment_size));
  }

  // See CachingAllocator::frees_room_for.
  bool frees_room_for(const Block* block, int64_t bytes) const {
    if (!block->allocated) return false;
    const int64_t size = round_size(bytes);
    const BlockPool& pool = size <= kSmallSize ? small_pool : large_pool;
    void* stream = stream_events != nullptr ? stream_events->current_stream() : nullptr;
    const Block* prev = block->prev != nullptr && is_free(block->prev) ? block->prev : nullptr;
    const Block* next = block->next != nullptr && is_free(block->next) ? block->next : nullptr;
    const int64_t run = block->size + (prev ? prev->size : 0) + (next ? next->size : 0);
    const bool same_pool =
        block->pool == &pool || (borrows_large_pool(size) && !block->pool->is_small);
    if (same_pool && block->stream == stream && run >= size) return true;
    const bool frees_segment = (block->prev == nullptr || (prev && prev->prev == nullptr)) &&
                               (block->next == nullptr || (next && next->next == nullptr));
    if (!frees_segment) return false;
    int64_t released = run;
    for (const auto& [base, segment] : segments) {
      if (wholly_free(segment)) released += segment.size;
    }
    const int64_t reserved_after = stats.reserved_bytes.current - released;
    return stats.memory_limit == 0 ||
           reserved_after + smallest_segment_for(size) <= stats.memory_limit;
  }

  // Over every stream (the sets are ordered by stream first); only read when
  // reporting out of memory.
  int64_t largest_free_block() const {
    int64_t largest = 0;
    for (const BlockPool* pool : {&small_pool, &large_pool}) {
      for (const Block* b : pool->free_blocks) largest = std::max(largest, b->size);
    }
    return largest;
  }

  [[noreturn]] void throw_oom(int64_t bytes, std::string_view cause) {
    ++stats.num_ooms;
    record(EventKind::Oom, bytes, nullptr);
    std::string limit = stats.memory_limit > 0 ? format_bytes(stats.memory_limit) : "none";
    throw OutOfMemoryError(fmt::format(
        "out of memory on {}: tried to allocate {} ({} bytes); allocated {}, reserved {}, "
        "limit {}, largest free block {} ({})",
        device, format_bytes(bytes), bytes, format_bytes(stats.allocated_bytes.current),
        format_bytes(stats.reserved_bytes.current), limit, format_bytes(largest_free_block()),
        cause));
  }

  void record(EventKind kind, int64_t bytes, const void* address, int64_t requested = 0) {
    if (!timeline_on) return;
    auto elapsed = std::chrono::steady_clock::now() - timeline_start;
    events.push_back(Event{
        .kind = kind,
        .bytes = bytes,
        .requested = requested,
        .address = reinterpret_cast<uintptr_t>(address),
        .allocated_after = stats.allocated_bytes.current,
        .reserved_after = stats.reserved_bytes.current,
        .tag = current_tag(),
        .time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count(),
    });
  }

  CachingAllocator* const self;
  const std::unique_ptr<RawBackend> backend;
  StreamEvents* const stream_events;  // the backend's, or nullptr (host memory)
  const Device device;
  mutable std::mutex mutex;  // guards everything below
  BlockPool small_pool{true};
  BlockPool large_pool{false};
  std::map<char*, MemorySegment> segments;  // by base address, so snapshots come in address order
  // Per stream, in recording order: the events of freed blocks still in use there.
  std::map<void*, std::deque<std::pair<void*, Block*>>> pending;
  Stats stats;
  std::vector<int64_t*> watches;  // the peaks of the live PeakWatches
  PressureRelief* relief = nullptr;
  // Requests left until the one that fails (FailAllocationScope); 0: none will.
  int64_t fail_countdown = 0;
  bool timeline_on = false;
  std::chrono::steady_clock::time_point timeline_start;
  std::vector<Event> events;
};

CachingAllocator::CachingAllocator(std::unique_ptr<RawBackend> backend)
    : impl_(std::make_unique<Impl>(this, std::move(backend))) {}

CachingAllocator::~CachingAllocator() = default;

Allocation CachingAllocator::allocate(int64_t bytes) {
  REMAT_CHECK(bytes >= 0, "allocate: negative size {} on {}", bytes, impl_->device);
  if (bytes == 0) return Allocation(nullptr, 0, impl_->device, nullptr);
  Block* block = impl_->allocate(bytes);
  return Allocation(block->ptr, bytes, impl_->device, block);
}

void CachingAllocator::free(void* block) { impl_->free(static_cast<Block*>(block)); }

void CachingAllocator::record_stream(void* block, const Stream& stream) {
  impl_->record_stream(static_cast<Block*>(block), stream);
}

Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->stats;
}

void CachingAllocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  Stats& s = impl_->stats;
  for (Stat* stat : {&s.allocated_bytes, &s.reserved_bytes, &s.active_bytes, &s.requested_bytes,
                     &s.allocation_count, &s.segment_count}) {
    stat->peak = stat->current;
  }
}

void CachingAllocator::add_watch(int64_t* peak) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  *peak = impl_->stats.allocated_bytes.current;
  impl_->watches.push_back(peak);
}

void CachingAllocator::remove_watch(int64_t* peak) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::erase(impl_->watches, peak);
}

int64_t CachingAllocator::watch_peak(const int64_t* peak) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return *peak;
}

void CachingAllocator::restart_watch(int64_t* peak) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  *peak = impl_->stats.allocated_bytes.current;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->synchronize_and_free_events();
  impl_->release_free_segments();
}

void CachingAllocator::set_memory_limit(int64_t bytes) {
  REMAT_CHECK(bytes >= 0, "set_memory_limit: negative limit {} on {}", bytes, impl_->device);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->stats.memory_limit = bytes;
}

PressureRelief* CachingAllocator::set_pressure_relief(PressureRelief* relief) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return std::exchange(impl_->relief, relief);
}

bool CachingAllocator::frees_room_for(const Allocation& allocation, int64_t bytes) const {
  if (allocation.block_ == nullptr) return false;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->frees_room_for(static_cast<const Block*>(allocation.block_), bytes);
}

void CachingAllocator::count_eviction(int64_t bytes) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  ++impl_->stats.num_evictions;
  impl_->stats.evicted_bytes += bytes;
}

void CachingAllocator::count_regeneration(int64_t bytes) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  ++impl_->stats.num_regenerations;
  impl_->stats.regenerated_bytes += bytes;
}

void CachingAllocator::fail_allocation(int64_t k) {
  REMAT_CHECK(k >= 0, "fail_allocation: k must be >= 0 (0 disarms), got {} on {}", k,
              impl_->device);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->fail_countdown = k;
}

std::vector<SegmentInfo> CachingAllocator::snapshot() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<SegmentInfo> out;
  out.reserve(impl_->segments.size());
  for (const auto& [base, segment] : impl_->segments) {
    SegmentInfo info;
    info.address = reinterpret_cast<uintptr_t>(base);
    info.size = segment.size;
    info.small_pool = segment.first->pool->is_small;
    for (const Block* b = segment.first; b != nullptr; b = b->next) {
      if (b->allocated) info.allocated_size += b->size;
      info.blocks.push_back(BlockInfo{.offset = b->ptr - base,
                                      .size = b->size,
                                      .requested = b->requested,
                                      .allocated = b->allocated});
    }
    out.push_back(std::move(info));
  }
  return out;
}

// Turning the timeline on starts a fresh one (events and clock); turning it
// off keeps what was recorded readable.
void CachingAllocator::enable_timeline(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (on && !impl_->timeline_on) {
    impl_->events.clear();
    impl_->timeline_start = std::chrono::steady_clock::now();
  }
  impl_->timeline_on = on;
}

std::vector<Event> CachingAllocator::timeline() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->events;
}

void CachingAllocator::clear_timeline() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->events.clear();
  impl_->timeline_start = std::chrono::steady_clock::now();
}

Device CachingAllocator::device() const { return impl_->device; }

void record_stream(const Allocation& allocation, const Stream& stream) {
  if (allocation.block_ == nullptr) return;  // zero bytes: nothing to protect
  auto* block = static_cast<Block*>(allocation.block_);
  REMAT_CHECK(block->owner != nullptr, "record_stream: the allocator of {} is gone",
              allocation.device());
  block->owner->record_stream(block, stream);
}

// The block knows its allocator, so an Allocation from any CachingAllocator
// (not only allocator_for's) goes back where it came from.
Allocation::~Allocation() {
  if (block_ == nullptr) return;
  auto* block = static_cast<Block*>(block_);
  if (block->owner != nullptr) {
    block->owner->free(block);
  } else {
    delete block;  // its allocator is gone and leaked the segment
  }
}

}  // namespace remat::memory
