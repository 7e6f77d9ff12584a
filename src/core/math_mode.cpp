#include "remat/core/math_mode.h"

#include <atomic>

namespace remat {
namespace {
// Relaxed: each flag is independent, and a kernel launch reads it once.
std::atomic<bool> matmul_tf32{false};
std::atomic<bool> cudnn_tf32{true};
}  // namespace

void set_matmul_allow_tf32(bool allow) { matmul_tf32.store(allow, std::memory_order_relaxed); }
bool matmul_allow_tf32() { return matmul_tf32.load(std::memory_order_relaxed); }
void set_cudnn_allow_tf32(bool allow) { cudnn_tf32.store(allow, std::memory_order_relaxed); }
bool cudnn_allow_tf32() { return cudnn_tf32.load(std::memory_order_relaxed); }

}  // namespace remat
