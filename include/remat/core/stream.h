// CUDA streams. Every thread has a current stream per device, the device's
// default (legacy) stream unless a StreamGuard says otherwise; kernels and
// copies are queued on it, and the caching allocator reuses a freed block on
// another stream only after that stream's work is known to be done.
#pragma once

#include "remat/core/device.h"

namespace remat {

class Stream {
 public:
  Stream() = default;  // the default stream of cuda:0
  // A new stream on `device` that does not synchronise with the default
  // stream; it lives until the process exits. Throws on the CPU.
  static Stream create(Device device);
  static Stream default_stream(Device device) { return Stream(device, nullptr); }
  // Wraps a cudaStream_t created elsewhere (the caller keeps it alive).
  static Stream from_handle(Device device, void* handle) { return Stream(device, handle); }

  Device device() const { return device_; }
  // The cudaStream_t (nullptr for the default stream).
  void* handle() const { return handle_; }
  // Waits until every task queued on the stream has finished.
  void synchronize() const;
  friend bool operator==(const Stream& a, const Stream& b) = default;

 private:
  Stream(Device device, void* handle) : device_(device), handle_(handle) {}
  Device device_ = Device::cuda(0);
  void* handle_ = nullptr;
};

// The calling thread's current stream on a CUDA device.
Stream current_stream(Device device);
void set_current_stream(const Stream& stream);

// Makes `stream` current on its device for the guard's scope.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
};

}  // namespace remat
