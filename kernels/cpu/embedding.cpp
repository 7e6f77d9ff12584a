// Embedding lookup and its gradient on the CPU (contract: kernels/embedding.h).
#include "kernels/embedding.h"

#include <algorithm>
#include <cstring>

#include "kernels/contiguous.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"
#include "kernels/elementwise.h"

namespace remat::kernels::cpu {
namespace {

// Checked before any parallel loop: an exception must not leave an OpenMP region.
void check_indices(const char* op, const int64_t* idx, int64_t n, int64_t num_weights) {
  for (int64_t k = 0; k < n; ++k) {
    REMAT_CHECK(idx[k] >= 0 && idx[k] < num_weights,
                "{}: index {} (at position {}) is out of range for {} embeddings", op, idx[k], k,
                num_weights);
  }
}

void embedding(const Tensor& w, const Tensor& idx_t, const Tensor& out) {
  check_contiguous("embedding", {w, idx_t, out});
  const int64_t n = idx_t.numel(), num_weights = w.shape()[0], width = w.shape()[1];
  const int64_t* idx = static_cast<const int64_t*>(idx_t.data_ptr());
  check_indices("embedding", idx, n, num_weights);
  const auto row_bytes = static_cast<size_t>(width) * w.element_size();
  const char* src = static_cast<const char*>(w.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  parallel_for(n, n * width >= 2 * kParallelGrain, [&](int64_t k) {
    std::memcpy(dst + static_cast<size_t>(k) * row_bytes,
                src + static_cast<size_t>(idx[k]) * row_bytes, row_bytes);
  });
}

void embedding_backward(const Tensor& g, const Tensor& idx_t, const Tensor& out) {
  check_contiguous("embedding_backward", {g, idx_t, out});
  const int64_t n = idx_t.numel(), num_weights = out.shape()[0], width = out.shape()[1];
  const int64_t* idx = static_cast<const int64_t*>(idx_t.data_ptr());
  check_indices("embedding_backward", idx, n, num_weights);
  elementwise_kernels.fill(out, 0.0);
  // Threads own disjoint column blocks and walk every index in order, so the
  // sums are the same for any thread count.
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (width + kBlock - 1) / kBlock;
  visit_floating(out.dtype(), "embedding_backward", [&]<typename T>() {
    const T* pg = static_cast<const T*>(g.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    parallel_for(blocks, blocks > 1 && n * width >= 2 * kParallelGrain, [&](int64_t b) {
      const int64_t begin = b * kBlock, end = std::min(width, begin + kBlock);
      for (int64_t k = 0; k < n; ++k) {
        const T* row = pg + k * width;
        T* target = o + idx[k] * width;
        for (int64_t d = begin; d < end; ++d) target[d] += row[d];
      }
    });
  });
}

}  // namespace

const EmbeddingKernels embedding_kernels{embedding, embedding_backward};

}  // namespace remat::kernels::cpu
