// The per-device allocator registry and the public functions of memory.h,
// which forward to it.
#include <array>
#include <map>
#include <mutex>
#include <utility>

#include "caching_allocator.h"
#include "remat/core/error.h"
#include "remat/core/tensor.h"

namespace remat::memory {
namespace {

// Allocators are created on first use and never destroyed: tensors in static
// storage may be freed after main returns, and must find their allocator.
struct Registry {
  std::mutex mutex;
  std::array<BackendFactory, kNumDeviceTypes> factories{};
  std::map<std::pair<DeviceType, int>, std::unique_ptr<CachingAllocator>> allocators;
};

Registry& registry() {
  static auto* instance = [] {
    auto* r = new Registry;
#if defined(REMAT_WITH_CUDA)
    // Registered here rather than by a static initialiser in the CUDA
    // sources, which the linker may drop from a static library.
    r->factories[static_cast<size_t>(DeviceType::CUDA)] = &make_cuda_backend;
#endif
    return r;
  }();
  return *instance;
}

// Outside every TagScope events carry an empty tag.
thread_local std::string tls_current_tag;

}  // namespace

CachingAllocator& allocator_for(Device d) {
  if (d.is_cpu()) {
    // The hot path: no registry lock. Every CPU index is the same host memory.
    static auto* cpu = new CachingAllocator(make_cpu_backend());
    return *cpu;
  }
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto& allocator = r.allocators[{d.type, d.index}];
  if (allocator == nullptr) {
    BackendFactory factory = r.factories[static_cast<size_t>(d.type)];
    REMAT_CHECK(factory != nullptr,
                "no allocator backend registered for {} (remat was built without CUDA, or its "
                "CUDA backend did not register)",
                d);
    allocator = std::make_unique<CachingAllocator>(factory(d.index));
  }
  return *allocator;
}

void register_backend_factory(DeviceType type, BackendFactory factory) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.factories[static_cast<size_t>(type)] = factory;
}

Stats stats(Device d) { return allocator_for(d).stats(); }
void reset_peak_stats(Device d) { allocator_for(d).reset_peak_stats(); }
void empty_cache(Device d) { allocator_for(d).empty_cache(); }
void set_memory_limit(Device d, int64_t bytes) { allocator_for(d).set_memory_limit(bytes); }
std::vector<SegmentInfo> snapshot(Device d) { return allocator_for(d).snapshot(); }
void enable_timeline(Device d, bool on) { allocator_for(d).enable_timeline(on); }
std::vector<Event> timeline(Device d) { return allocator_for(d).timeline(); }
void clear_timeline(Device d) { allocator_for(d).clear_timeline(); }
Allocation allocate(Device d, int64_t bytes) { return allocator_for(d).allocate(bytes); }

PeakWatch::PeakWatch(Device d) : device_(d) { allocator_for(d).add_watch(&peak_); }
PeakWatch::~PeakWatch() { allocator_for(device_).remove_watch(&peak_); }
int64_t PeakWatch::peak() const { return allocator_for(device_).watch_peak(&peak_); }
void PeakWatch::restart() { allocator_for(device_).restart_watch(&peak_); }

FailAllocationScope::FailAllocationScope(Device d, int64_t k) : device_(d) {
  REMAT_CHECK(k >= 1, "FailAllocationScope: k counts requests from 1, got {}", k);
  allocator_for(d).fail_allocation(k);
}
FailAllocationScope::~FailAllocationScope() { allocator_for(device_).fail_allocation(0); }

void record_stream(const Tensor& tensor, const Stream& stream) {
  REMAT_CHECK(tensor.defined(), "record_stream: undefined tensor");
  record_stream(tensor.impl().storage->data, stream);
}

const char* event_kind_name(EventKind k) {
  switch (k) {
    case EventKind::Alloc: return "alloc";
    case EventKind::Free: return "free";
    case EventKind::SegmentAlloc: return "segment_alloc";
    case EventKind::SegmentFree: return "segment_free";
    case EventKind::Oom: return "oom";
  }
  return "unknown";
}

TagScope::TagScope(std::string tag) : previous_(std::exchange(tls_current_tag, std::move(tag))) {}
TagScope::~TagScope() { tls_current_tag = std::move(previous_); }
const std::string& current_tag() { return tls_current_tag; }

}  // namespace remat::memory
