// A raw allocator backend for tests: host memory, posing as any device, that
// runs out after `budget` bytes of live segments (raw_alloc returns null, as
// a real backend does when the memory is not there).
#pragma once

#include <cstdint>
#include <memory>

#include "memory/raw_backend.h"

namespace remat::testing {

class LimitedBackend final : public memory::RawBackend {
 public:
  explicit LimitedBackend(int64_t budget, Device device = kCPU)
      : host_(memory::make_cpu_backend()), budget_(budget), device_(device) {}
  void* raw_alloc(size_t bytes) override {
    if (in_use_ + static_cast<int64_t>(bytes) > budget_) return nullptr;
    in_use_ += static_cast<int64_t>(bytes);
    return host_->raw_alloc(bytes);
  }
  void raw_free(void* ptr, size_t bytes) override {
    in_use_ -= static_cast<int64_t>(bytes);
    host_->raw_free(ptr, bytes);
  }
  Device device() const override { return device_; }
  const char* name() const override { return "limited"; }

 private:
  std::unique_ptr<memory::RawBackend> host_;
  int64_t budget_;
  int64_t in_use_ = 0;
  Device device_;
};

}  // namespace remat::testing
