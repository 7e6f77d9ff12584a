#include "memory/offload.h"

#include <chrono>
#include <cstring>
#include <map>

#include "remat/core/error.h"

namespace remat::memory {

Copy::~Copy() {
  if (engine_ != nullptr) engine_->release(handle_);
}

OffloadPool::OffloadPool(Device device, std::unique_ptr<RawBackend> host,
                         std::unique_ptr<CopyEngine> engine)
    : device_(device), host_(std::move(host)), engine_(std::move(engine)) {}

OffloadPool& OffloadPool::of(Device device) {
  static std::mutex mutex;
  static auto* pools = new std::map<std::pair<DeviceType, int>, OffloadPool*>;
  std::lock_guard<std::mutex> lock(mutex);
  const int index = device.is_cpu() ? 0 : device.index;
  OffloadPool*& pool = (*pools)[{device.type, index}];
  if (pool == nullptr) {
#if defined(REMAT_WITH_CUDA)
    if (device.is_cuda()) {
      pool = new OffloadPool(device, make_pinned_host_backend(), make_cuda_copy_engine(index));
    }
#endif
    REMAT_CHECK(device.is_cpu() || pool != nullptr,
                "offload from {}: remat was built without CUDA, so it has no copy engine for it",
                device);
    if (pool == nullptr) pool = new OffloadPool(device, make_cpu_backend(), nullptr);
  }
  return *pool;
}

Allocation OffloadPool::allocate(int64_t bytes) { return host_.allocate(bytes); }

CopyHandle OffloadPool::copy(Direction direction, const Allocation& from, const Allocation& to,
                             int64_t bytes) {
  const bool to_host = direction == Direction::ToHost;
  const Allocation& device_block = to_host ? from : to;
  CopyHandle copy;
  double took_ms = 0;
  if (engine_ == nullptr) {
    const auto start = std::chrono::steady_clock::now();
    std::memcpy(to.get(), from.get(), static_cast<size_t>(bytes));
    took_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    copy = std::make_shared<Copy>(nullptr, nullptr, bytes);
  } else {
    copy = std::make_shared<Copy>(engine_.get(),
                                  engine_->copy(to.get(), from.get(), bytes, device_block), bytes);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  ++(to_host ? counts_.copies_to_host : counts_.copies_to_device);
  (to_host ? counts_.bytes_to_host : counts_.bytes_to_device) += bytes;
  counts_.copy_ms += took_ms;
  if (engine_ != nullptr) {
    poll();
    counts_.bytes_in_flight += bytes;
    pending_.push_back(copy);
  }
  return copy;
}

void OffloadPool::poll() {
  // Copies complete in the order they were queued: one stream runs them.
  while (!pending_.empty() && engine_->done(pending_.front()->handle_)) {
    const Copy& copy = *pending_.front();
    counts_.bytes_in_flight -= copy.bytes_;
    counts_.copy_ms += engine_->elapsed_ms(copy.handle_);
    pending_.pop_front();
  }
}

void OffloadPool::order_after(const CopyHandle& copy) {
  if (copy && copy->engine_ != nullptr) copy->engine_->order_after(copy->handle_);
}

OffloadStats OffloadPool::stats() {
  OffloadStats s;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (engine_ != nullptr) poll();
    s = counts_;
  }
  s.pool = host_.stats();
  return s;
}

OffloadStats offload_stats(Device d) { return OffloadPool::of(d).stats(); }
void empty_offload_cache(Device d) { OffloadPool::of(d).empty_cache(); }

}  // namespace remat::memory
