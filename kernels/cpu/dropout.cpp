// Dropout on the CPU (contract: kernels/dropout.h): one Philox block per
// four elements, blocks in parallel with OpenMP.
#include "kernels/dropout.h"

#include "kernels/contiguous.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

void dropout(const Tensor& x, double p, double scale, uint64_t seed, uint64_t offset,
             const Tensor& out) {
  check_contiguous("dropout", {x, out});
  const int64_t n = out.numel();
  const auto threshold = static_cast<float>(p);
  visit_floating(out.dtype(), "dropout", [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    const auto s = static_cast<T>(scale);
    // Stream position offset + i is lane (offset + i) % 4 of Philox block
    // (offset + i) / 4: one block evaluation serves four elements.
    const int64_t first_block = static_cast<int64_t>(offset / 4);
    const int64_t blocks =
        n == 0 ? 0 : static_cast<int64_t>((offset + n - 1) / 4) - first_block + 1;
    parallel_for(blocks, n >= 2 * kParallelGrain, [&](int64_t b) {
      const auto block = static_cast<uint64_t>(first_block + b);
      const Philox4 draws = philox(seed, block);
      for (uint64_t lane = 0; lane < 4; ++lane) {
        const uint64_t position = block * 4 + lane;
        if (position < offset || position >= offset + static_cast<uint64_t>(n)) continue;
        const auto i = static_cast<int64_t>(position - offset);
        o[i] = dropout_keeps_bits(draws.v[lane], threshold) ? in[i] * s : T(0);
      }
    });
  });
}

}  // namespace

const DropoutKernels dropout_kernels{dropout};

}  // namespace remat::kernels::cpu
