// Public view of the caching allocator: statistics, limits, snapshots and the
// event timeline. Every tensor byte on every device goes through it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "remat/core/device.h"

namespace remat {
class Stream;
class Tensor;
}  // namespace remat

namespace remat::memory {

class CachingAllocator;

// One statistic in the shape of PyTorch's c10 allocator: the current value,
// its peak since the last reset_peak_stats, and the running totals added and
// removed since the allocator was created.
struct Stat {
  int64_t current = 0;
  int64_t peak = 0;
  int64_t allocated = 0;
  int64_t freed = 0;
};

struct Stats {
  Stat allocated_bytes;           // bytes in blocks handed to tensors (rounded sizes)
  Stat reserved_bytes;            // bytes obtained from the raw backend (segments)
  Stat active_bytes;              // allocated plus freed blocks still in use by another stream
  Stat requested_bytes;           // bytes tensors asked for (before rounding)
  Stat allocation_count;          // live blocks handed out
  Stat segment_count;             // live segments obtained from the raw backend
  int64_t num_raw_allocs = 0;     // raw backend allocations (malloc / cudaMalloc)
  int64_t num_raw_frees = 0;      // raw backend frees
  int64_t num_alloc_retries = 0;  // requests that had to free the cache and retry
  int64_t num_ooms = 0;           // requests that failed with OutOfMemoryError
  int64_t memory_limit = 0;       // 0: none
  // The eviction mode (BudgetGuard): tape tensors freed to serve requests
  // under the limit, and those made again from the tape when needed.
  int64_t num_evictions = 0;
  int64_t evicted_bytes = 0;
  int64_t num_regenerations = 0;
  int64_t regenerated_bytes = 0;
};

Stats stats(Device d);

// A device's offload pool (Policy::offload in checkpoint.h): the host memory
// that saved tensors are copied to in the forward and back from in backward.
// On CUDA it is pinned memory with its own caching allocator, and the copies
// run on a copy stream of the device, overlapping compute; on the CPU it is a
// second host allocator and the copies are synchronous memcpys, so the same
// logic and accounting run without a GPU.
struct OffloadStats {
  Stats pool;                  // the pool's allocator: .allocated_bytes.current is what is away now
  int64_t copies_to_host = 0;  // copies into the pool
  int64_t bytes_to_host = 0;
  int64_t copies_to_device = 0;  // copies back
  int64_t bytes_to_device = 0;
  int64_t bytes_in_flight = 0;  // queued copies not yet known to be complete
  double copy_ms = 0;           // time the completed copies took (CUDA: on the copy stream)
};
OffloadStats offload_stats(Device d);
// Returns the pool's wholly free cached segments to the system.
void empty_offload_cache(Device d);
// Sets every peak to its current value.
void reset_peak_stats(Device d);
// The peak of allocated bytes on a device from the watch's start (or its
// last restart) on, kept apart from the peaks of Stats: code that measures a
// stretch of its own (the budget planner) leaves the caller's
// reset_peak_stats and peaks alone. Costs a compare per allocation while it
// lives; any number may live at once.
class PeakWatch {
 public:
  explicit PeakWatch(Device d);
  ~PeakWatch();
  PeakWatch(const PeakWatch&) = delete;
  PeakWatch& operator=(const PeakWatch&) = delete;

  int64_t peak() const;
  // Starts again from the bytes allocated now.
  void restart();
  Device device() const { return device_; }

 private:
  Device device_;
  int64_t peak_ = 0;  // raised by the allocator, under its lock
};

// Waits for the blocks other streams still use (record_stream), then returns
// every wholly free cached segment to the raw backend.
void empty_cache(Device d);
// Caps reserved bytes; a request that would pass it frees the cache, retries,
// then throws OutOfMemoryError. 0 removes the limit.
void set_memory_limit(Device d, int64_t bytes);

// Testing aid (fault injection, docs/memory.md): while the scope lives, the
// k-th allocation request on d made after its construction (k >= 1, counting
// every request of a tensor's bytes, served from the cache or not, on any
// thread) throws OutOfMemoryError as a request over the memory limit does,
// by the same path: the cache is emptied, the request retried and refused,
// num_ooms counts it. Only that request fails; destroying the scope disarms
// a failure that has not come. One scope per device at a time.
//   { memory::FailAllocationScope fail(kCPU, 3); step(); }  // the step's 3rd allocation throws
class FailAllocationScope {
 public:
  FailAllocationScope(Device d, int64_t k);
  ~FailAllocationScope();
  FailAllocationScope(const FailAllocationScope&) = delete;
  FailAllocationScope& operator=(const FailAllocationScope&) = delete;

 private:
  Device device_;
};

struct BlockInfo {
  int64_t offset = 0;     // from the segment's start
  int64_t size = 0;       // rounded size
  int64_t requested = 0;  // size asked for; 0 when free
  bool allocated = false;
};

struct SegmentInfo {
  uintptr_t address = 0;
  int64_t size = 0;
  int64_t allocated_size = 0;
  bool small_pool = false;
  std::vector<BlockInfo> blocks;  // in address order, covering the segment
};

std::vector<SegmentInfo> snapshot(Device d);

enum class EventKind : int8_t { Alloc, Free, SegmentAlloc, SegmentFree, Oom };
const char* event_kind_name(EventKind k);

struct Event {
  EventKind kind = EventKind::Alloc;
  int64_t bytes = 0;      // the block's (rounded) size, or the segment's
  int64_t requested = 0;  // Alloc and Free: the bytes the tensor asked for
  uintptr_t address = 0;
  int64_t allocated_after = 0;  // allocated_bytes.current after the event
  int64_t reserved_after = 0;   // reserved_bytes.current after the event
  std::string tag;              // the thread's TagScope when it happened
  int64_t time_ns = 0;          // steady clock, from the timeline's start
};

// The timeline is off by default (it costs a string per event).
void enable_timeline(Device d, bool on);
std::vector<Event> timeline(Device d);
void clear_timeline(Device d);

// Labels the events this thread causes while it lives ("forward", "backward",
// "replay", ...). Scopes nest; the innermost wins.
class TagScope {
 public:
  explicit TagScope(std::string tag);
  ~TagScope();
  TagScope(const TagScope&) = delete;
  TagScope& operator=(const TagScope&) = delete;

 private:
  std::string previous_;
};
const std::string& current_tag();

// Owns one block from the caching allocator; returns it when destroyed.
class Allocation {
 public:
  Allocation() = default;
  Allocation(void* ptr, int64_t size, Device device, void* block)
      : ptr_(ptr), size_(size), device_(device), block_(block) {}
  Allocation(Allocation&& o) noexcept { swap(o); }
  Allocation& operator=(Allocation&& o) noexcept {
    Allocation tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;
  ~Allocation();

  void* get() const { return ptr_; }
  int64_t size() const { return size_; }
  Device device() const { return device_; }

 private:
  friend void record_stream(const Allocation& allocation, const Stream& stream);
  friend class CachingAllocator;
  void swap(Allocation& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    std::swap(device_, o.device_);
    std::swap(block_, o.block_);
  }
  void* ptr_ = nullptr;
  int64_t size_ = 0;
  Device device_ = kCPU;
  void* block_ = nullptr;  // the allocator's block record
};

// CUDA stream-aware reuse, as in PyTorch: a block serves only allocations on
// the stream that was current when its memory was obtained. When other
// streams use it, record them here; once it is freed, it returns to the pool
// only after the work queued on each of them until then has finished (an
// event per stream, polled by later allocations and waited for by
// empty_cache and the out-of-memory retry). The stream must be on the
// allocation's device; recording its own stream changes nothing; an empty
// allocation is ignored. Throws on host memory (no streams).
void record_stream(const Allocation& allocation, const Stream& stream);
// Records the tensor's storage (every view of it).
void record_stream(const Tensor& tensor, const Stream& stream);

// Allocates bytes on device through its caching allocator. Zero bytes gives an
// empty Allocation. Throws OutOfMemoryError.
Allocation allocate(Device d, int64_t bytes);

}  // namespace remat::memory
