// Random fills on the CPU (contract: kernels/random.h).
#include "kernels/random.h"

#include "kernels/contiguous.h"
#include "kernels/cpu/loops.h"
#include "kernels/philox.h"

namespace remat::kernels::cpu {
namespace {

void fill_random(const Tensor& out, Distribution dist, uint64_t seed, uint64_t offset) {
  check_contiguous("fill_random", {out});
  const int64_t n = out.numel();
  visit_dtype(out.dtype(), [&]<typename T>() {
    if constexpr (std::is_same_v<T, bool> || std::is_integral_v<T>) {
      throw Error(fmt::format("fill_random: dtype {} is not floating point", out.dtype()));
    } else {
      T* p = static_cast<T*>(out.data_ptr());
      parallel_for(n, n >= 2 * kParallelGrain, [&](int64_t i) {
        auto u = static_cast<uint64_t>(i);
        float v = dist == Distribution::Normal ? philox_normal(seed, offset, u)
                                               : philox_uniform(seed, offset, u);
        p[i] = T(v);
      });
    }
  });
}

}  // namespace

const RandomKernels random_kernels{fill_random};

}  // namespace remat::kernels::cpu
