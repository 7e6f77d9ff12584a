// The caching allocator: one implementation for every device, parameterised by
// a RawBackend. Modelled on PyTorch's c10 CUDACachingAllocator: sizes rounded
// to 512 bytes; a small pool (requests <= 1 MiB, carved from 2 MiB segments)
// and a large pool (requests < 10 MiB from 20 MiB segments, or their own size
// rounded to 2 MiB where a 20 MiB one would pass the memory limit; larger ones
// from segments rounded to 2 MiB); best-fit reuse; blocks split on allocation and
// coalesced with free neighbours on free; a free segment stays cached until
// empty_cache or memory pressure. On a stream-ordered backend (CUDA) a segment
// belongs to the stream that was current when it was obtained, and its blocks
// serve only allocations on that stream; a block recorded on other streams
// (record_stream) returns to the pool only once events on those streams show
// their queued work is done.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "raw_backend.h"
#include "remat/core/stream.h"
#include "remat/memory/memory.h"

namespace remat::memory {

// What a stream-ordered raw backend (cudaMalloc) implements beside RawBackend;
// the allocator finds it by dynamic_cast, host backends lack it. Handles are
// opaque: a stream is a cudaStream_t (nullptr: the default stream), an event a
// cudaEvent_t. The allocator calls these under its mutex.
class StreamEvents {
 public:
  virtual ~StreamEvents() = default;
  // The calling thread's current stream on the backend's device.
  virtual void* current_stream() const = 0;
  // An event from the backend's pool, recorded on `stream` now.
  virtual void* record_event(void* stream) = 0;
  // True once the work queued before the event has finished.
  virtual bool event_done(void* event) = 0;
  virtual void synchronize_event(void* event) = 0;
  // Returns the event to the pool.
  virtual void release_event(void* event) = 0;
};

// What the allocator asks, when a request does not fit under the memory
// limit even with the cache given back, to free more: the eviction mode
// (src/checkpoint/evict.cpp) frees tape tensors it can regenerate.
class PressureRelief {
 public:
  virtual ~PressureRelief() = default;
  // Called without the allocator's lock, on the thread whose request of
  // `bytes` (rounded) failed, as often as it returns true: free something
  // (preferably what lets the request be served, see frees_room_for).
  // False: nothing is left to free.
  virtual bool relieve(int64_t bytes) = 0;
  // For the OutOfMemoryError once relieve gave up: what holds the memory.
  virtual std::string unevictable() const = 0;
};

class CachingAllocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawBackend> backend);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Throws OutOfMemoryError (message: request, allocated, reserved, limit,
  // largest free block) after waiting for blocks other streams still use,
  // freeing the cache and retrying once.
  Allocation allocate(int64_t bytes);
  // Called by ~Allocation.
  void free(void* block);
  // Marks a live block as used on `stream` (a stream of this allocator's
  // device other than the block's own): when freed, it is reused only after
  // the work queued on `stream` until then has finished.
  void record_stream(void* block, const Stream& stream);

  Stats stats() const;
  void reset_peak_stats();
  // PeakWatch: the allocator raises *peak to allocated bytes on every
  // allocation from add_watch (which sets it to the current value) until
  // remove_watch; these read and restart it under the lock.
  void add_watch(int64_t* peak);
  void remove_watch(int64_t* peak);
  int64_t watch_peak(const int64_t* peak) const;
  void restart_watch(int64_t* peak);
  void empty_cache();
  void set_memory_limit(int64_t bytes);
  // Null removes it; the previous one is returned.
  PressureRelief* set_pressure_relief(PressureRelief* relief);
  // Whether a request of `bytes` from this thread's stream could be served
  // once `allocation` is freed: its block with its free neighbours is large
  // enough, or its segment becomes wholly free and giving back the free
  // segments leaves room under the limit for a new one.
  bool frees_room_for(const Allocation& allocation, int64_t bytes) const;
  void count_eviction(int64_t bytes);
  void count_regeneration(int64_t bytes);
  // The k-th allocate() with bytes > 0 from now (k >= 1) throws as if over
  // the limit; 0 disarms. See FailAllocationScope.
  void fail_allocation(int64_t k);
  std::vector<SegmentInfo> snapshot() const;
  void enable_timeline(bool on);
  std::vector<Event> timeline() const;
  void clear_timeline();

  Device device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The allocator of a device, created on first use. CPU is always present; the
// CUDA backend registers its factory from the CUDA sources.
CachingAllocator& allocator_for(Device d);
using BackendFactory = std::unique_ptr<RawBackend> (*)(int device_index);
void register_backend_factory(DeviceType type, BackendFactory factory);

}  // namespace remat::memory
