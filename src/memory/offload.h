// The offload pool of a device: host memory for saved tensors moved off the
// device (Policy::offload), the copies into it and back, and their
// statistics (memory.h: OffloadStats). src/checkpoint/pack.cpp decides what
// moves and when; this layer only copies and counts.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

#include "memory/caching_allocator.h"

namespace remat::memory {

// Queues copies between a device and host memory on a stream of its own and
// tells when they are done (src/memory/cuda/cuda_copies.cpp). The CPU has
// none: its copies are synchronous.
class CopyEngine {
 public:
  virtual ~CopyEngine() = default;
  // Queues the copy of `bytes` from src to dst after the work queued so far
  // on the device's current stream; `device_block` (the device side of the
  // copy) is not reused before the copy is done. Returns the copy's handle.
  virtual void* copy(void* dst, const void* src, int64_t bytes, const Allocation& device_block) = 0;
  virtual bool done(void* copy) = 0;
  // The current stream's later work waits for the copy; the host does not.
  virtual void order_after(void* copy) = 0;
  // The copy's time on the copy stream, once done.
  virtual double elapsed_ms(void* copy) = 0;
  virtual void release(void* copy) = 0;
};

#if defined(REMAT_WITH_CUDA)
std::unique_ptr<CopyEngine> make_cuda_copy_engine(int device_index);
#endif

// A copy in flight or done, shared by the pool (which counts it) and the
// packed tensor (which orders reads after it).
class Copy {
 public:
  Copy(CopyEngine* engine, void* handle, int64_t bytes)
      : engine_(engine), handle_(handle), bytes_(bytes) {}
  ~Copy();
  Copy(const Copy&) = delete;
  Copy& operator=(const Copy&) = delete;

 private:
  friend class OffloadPool;
  CopyEngine* engine_;  // null: a synchronous copy, done when made
  void* handle_;
  int64_t bytes_;
};
using CopyHandle = std::shared_ptr<Copy>;

class OffloadPool {
 public:
  // The pool of a device, made on first use and never destroyed.
  static OffloadPool& of(Device device);

  // Host memory in the pool (pinned for a CUDA device).
  Allocation allocate(int64_t bytes);
  enum class Direction { ToHost, ToDevice };
  // Copies the first `bytes` of `from` into `to`: device memory into the
  // pool's (ToHost) or back (ToDevice).
  CopyHandle copy(Direction direction, const Allocation& from, const Allocation& to, int64_t bytes);
  // The current stream's later work reads what the copy wrote only after it
  // is done (a no-op for a synchronous copy).
  void order_after(const CopyHandle& copy);

  OffloadStats stats();
  void empty_cache() { host_.empty_cache(); }

 private:
  OffloadPool(Device device, std::unique_ptr<RawBackend> host, std::unique_ptr<CopyEngine> engine);
  void poll();  // counts the copies found done; the caller holds mutex_

  Device device_;
  CachingAllocator host_;
  std::unique_ptr<CopyEngine> engine_;
  std::mutex mutex_;
  OffloadStats counts_;             // all but .pool, under mutex_
  std::deque<CopyHandle> pending_;  // queued on the engine, in order
};

}  // namespace remat::memory
