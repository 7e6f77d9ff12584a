#include <cstdlib>

#include "raw_backend.h"

namespace remat::memory {
namespace {

// 64 bytes: a cache line, and the widest SIMD load (AVX-512) the CPU kernels use.
constexpr size_t kHostAlignment = 64;

class CpuBackend final : public RawBackend {
 public:
  void* raw_alloc(size_t bytes) override {
    // aligned_alloc wants a size that is a multiple of the alignment.
    size_t padded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    if (padded < bytes) return nullptr;  // the padding overflowed size_t
    return std::aligned_alloc(kHostAlignment, padded);
  }
  void raw_free(void* ptr, size_t /*bytes*/) override { std::free(ptr); }
  Device device() const override { return kCPU; }
  const char* name() const override { return "cpu"; }
};

}  // namespace

std::unique_ptr<RawBackend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace remat::memory
