// Embedding lookup and its gradient on the GPU (contract: kernels/embedding.h).
#include <cub/device/device_radix_sort.cuh>

#include <bit>

#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/index_scan.cuh"
#include "kernels/embedding.h"

namespace remat::kernels::cuda {
namespace {

// Element e of out [n, width] is element e % width of weight row
// idx[e / width]; W is an unsigned integer of the element's size.
template <typename W>
__global__ void embedding_kernel(const W* weight, const int64_t* idx, int64_t width, int64_t total,
                                 W* out) {
  REMAT_GRID_STRIDE_LOOP(e, total) { out[e] = weight[idx[e / width] * width + e % width]; }
}

__global__ void iota_kernel(int64_t* out, int64_t n) {
  REMAT_GRID_STRIDE_LOOP(k, n) { out[k] = k; }
}

// The indices sorted (stably, so equal indices keep their positions' order)
// with their positions. The block at the first entry of each run of equal
// indices sums the run's grad rows column by column, in position order: each
// output element has one writer, and the sum's order is the CPU kernel's.
// Not atomicAdd: float atomics sum in a different order on every run, which
// would break the bitwise-identical gradients checkpoint() promises, and
// 16-bit atomics would round after every addition.
template <typename D>
__global__ void embedding_backward_kernel(const D* grad, const uint64_t* sorted_idx,
                                          const int64_t* sorted_pos, int64_t n, int64_t width,
                                          D* out) {
  for (int64_t k = blockIdx.x; k < n; k += gridDim.x) {
    if (k > 0 && sorted_idx[k] == sorted_idx[k - 1]) continue;
    const uint64_t row = sorted_idx[k];
    for (int64_t d = threadIdx.x; d < width; d += blockDim.x) {
      acc_t<D> sum = 0;
      for (int64_t j = k; j < n && sorted_idx[j] == row; ++j) {
        sum += to_acc(grad[sorted_pos[j] * width + d]);
      }
      out[static_cast<int64_t>(row) * width + d] = from_acc<D>(sum);
    }
  }
}

// Calls fn.template operator()<W>() with W the unsigned integer of `bytes` bytes.
template <typename Fn>
void visit_bits(size_t bytes, Fn&& fn) {
  switch (bytes) {
    case 1: fn.template operator()<uint8_t>(); return;
    case 2: fn.template operator()<uint16_t>(); return;
    case 4: fn.template operator()<uint32_t>(); return;
    case 8: fn.template operator()<uint64_t>(); return;
    default: throw Error(fmt::format("embedding: no CUDA kernel for {}-byte elements", bytes));
  }
}

void check_indices(const char* op, const Tensor& idx, int64_t num_weights) {
  const IndexScan scan = scan_indices(idx, num_weights, std::nullopt);
  REMAT_CHECK(!scan.bad_position, "{}: index {} (at position {}) is out of range for {} embeddings",
              op, scan.bad_value, scan.bad_position.value_or(0), num_weights);
}

size_t align_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

void embedding(const Tensor& w, const Tensor& idx, const Tensor& out) {
  check_contiguous("embedding", {w, idx, out});
  const int64_t num_weights = w.shape()[0], width = w.shape()[1], total = out.numel();
  check_indices("embedding", idx, num_weights);
  if (total == 0) return;
  DeviceScope scope(out);
  visit_bits(w.element_size(), [&]<typename W>() {
    embedding_kernel<W><<<blocks_for(total), kThreads, 0, stream_of(out)>>>(
        static_cast<const W*>(w.data_ptr()), static_cast<const int64_t*>(idx.data_ptr()), width,
        total, static_cast<W*>(out.data_ptr()));
  });
  REMAT_CUDA_LAUNCH_CHECK("embedding_kernel");
}

void embedding_backward(const Tensor& g, const Tensor& idx, const Tensor& out) {
  check_contiguous("embedding_backward", {g, idx, out});
  const int64_t n = idx.numel(), num_weights = out.shape()[0], width = out.shape()[1];
  check_indices("embedding_backward", idx, num_weights);
  if (out.numel() == 0) return;
  DeviceScope scope(out);
  const cudaStream_t stream = stream_of(out);
  // Rows no index names stay zero (all-zero bits are 0 in every float dtype).
  REMAT_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0, static_cast<size_t>(out.nbytes()), stream));
  if (n == 0) return;

  // Radix sort by index over the bits that indices below num_weights use;
  // CUB's radix sort is stable.
  const auto* keys_in = static_cast<const uint64_t*>(idx.data_ptr());  // checked non-negative
  const int end_bit =
      std::max(1, static_cast<int>(std::bit_width(static_cast<uint64_t>(num_weights - 1))));
  size_t sort_bytes = 0;
  REMAT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, keys_in, static_cast<uint64_t*>(nullptr),
      static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr), n, 0, end_bit, stream));
  const size_t array_bytes = align_up(static_cast<size_t>(n) * sizeof(int64_t));
  const memory::Allocation scratch = workspace(out, 3 * array_bytes + sort_bytes);
  char* base = static_cast<char*>(scratch.get());
  auto* keys_out = reinterpret_cast<uint64_t*>(base);
  auto* pos_in = reinterpret_cast<int64_t*>(base + array_bytes);
  auto* pos_out = reinterpret_cast<int64_t*>(base + 2 * array_bytes);
  iota_kernel<<<blocks_for(n), kThreads, 0, stream>>>(pos_in, n);
  REMAT_CUDA_LAUNCH_CHECK("iota_kernel");
  REMAT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + 3 * array_bytes, sort_bytes, keys_in,
                                                   keys_out, pos_in, pos_out, n, 0, end_bit,
                                                   stream));

  const auto threads = static_cast<int>(std::min<int64_t>(kThreads, (width + 31) / 32 * 32));
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(n, 65535));
  visit_floating(out.dtype(), "embedding_backward", [&]<typename D>() {
    embedding_backward_kernel<D>
        <<<blocks, threads, 0, stream>>>(static_cast<const D*>(g.data_ptr()), keys_out, pos_out, n,
                                         width, static_cast<D*>(out.data_ptr()));
  });
  REMAT_CUDA_LAUNCH_CHECK("embedding_backward_kernel");
}

}  // namespace

const EmbeddingKernels embedding_kernels{embedding, embedding_backward};

}  // namespace remat::kernels::cuda
