// The caching allocator: one implementation for every device, parameterised by
// a RawBackend. Modelled on PyTorch's c10 CUDACachingAllocator: sizes rounded
// to 512 bytes; a small pool (requests <= 1 MiB, carved from 2 MiB segments)
// and a large pool (requests < 10 MiB from 20 MiB segments, larger ones from
// segments rounded to 2 MiB); best-fit reuse; blocks split on allocation and
// coalesced with free neighbours on free; a free segment stays cached until
// empty_cache or memory pressure.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "raw_backend.h"
#include "remat/memory/memory.h"

namespace remat::memory {

class CachingAllocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawBackend> backend);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Throws OutOfMemoryError (message: request, allocated, reserved, limit,
  // largest free block) after freeing the cache and retrying once.
  Allocation allocate(int64_t bytes);
  // Called by ~Allocation.
  void free(void* block);

  Stats stats() const;
  void reset_peak_stats();
  void empty_cache();
  void set_memory_limit(int64_t bytes);
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
