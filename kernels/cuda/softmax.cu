#include "kernels/cuda/softmax.cuh"

#include <cmath>
#include <limits>

#include "kernels/cuda/common.cuh"

namespace remat::kernels::cuda {
namespace {

// A group of blockDim.x threads per row, blockDim.y rows per block. The row
// is read three times (max, sum of exponentials, output); the later reads
// mostly hit the cache.
template <typename D, bool kLog>
__global__ void softmax_kernel(const D* x, D* out, int64_t rows, int64_t len, int64_t xs,
                               int64_t os, int64_t queries, bool causal, StridedIndexer<2> ix) {
  using A = acc_t<D>;
  constexpr A kInf = std::numeric_limits<A>::infinity();
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    int64_t off[2];
    ix.offsets(r, off);
    const D* p = x + off[0];
    D* q = out + off[1];
    // Query i sees keys j <= i + (Lk - Lq): bottom-right aligned, as in PyTorch.
    const int64_t visible = causal ? min(len, r % queries + (len - queries) + 1) : len;
    if (visible <= 0) {  // no visible key: NaN, as a row of -inf logits gives in PyTorch
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
        q[k * os] = from_acc<D>(std::numeric_limits<A>::quiet_NaN());
      }
      continue;
    }
    A m = -kInf;
    for (int64_t k = threadIdx.x; k < visible; k += blockDim.x) {
      const A v = to_acc(p[k * xs]);
      m = m < v ? v : m;  // std::max's rule: NaN logits do not become the max
    }
    m = group_reduce(
        m, [](A a, A b) { return a < b ? b : a; }, -kInf);
    if (m == -kInf) m = 0;  // a row of -inf logits: keep exp finite
    A total = 0;
    for (int64_t k = threadIdx.x; k < visible; k += blockDim.x) {
      total += std::exp(to_acc(p[k * xs]) - m);
    }
    total = group_reduce(
        total, [](A a, A b) { return a + b; }, A(0));
    if constexpr (kLog) {
      const A lse = m + std::log(total);
      for (int64_t k = threadIdx.x; k < visible; k += blockDim.x) {
        q[k * os] = from_acc<D>(to_acc(p[k * xs]) - lse);
      }
    } else {
      const A inv = A(1) / total;
      for (int64_t k = threadIdx.x; k < visible; k += blockDim.x) {
        q[k * os] = from_acc<D>(std::exp(to_acc(p[k * xs]) - m) * inv);
      }
    }
    const A hidden = kLog ? -kInf : A(0);
    for (int64_t k = visible + threadIdx.x; k < len; k += blockDim.x) {
      q[k * os] = from_acc<D>(hidden);
    }
  }
}

}  // namespace

void softmax(const Tensor& x, int64_t dim, bool log, bool causal, const Tensor& out) {
  REMAT_CHECK(out.dtype() == x.dtype() && out.shape() == x.shape() && out.device() == x.device(),
              "softmax on CUDA: output {} must match the input {}", TensorMeta::of(out).str(),
              TensorMeta::of(x).str());
  REMAT_CHECK(!causal || (x.dim() >= 2 && dim == x.dim() - 1),
              "softmax on CUDA: causal needs scores [..., Lq, Lk] and the last dim, got {} and "
              "dim {}",
              TensorMeta::of(x).str(), dim);
  const auto d = static_cast<size_t>(dim);
  const int64_t len = x.shape()[d];
  const int64_t queries = causal ? x.shape()[d - 1] : 1;
  // Rows: every index of the other dims.
  Shape rows_shape = x.shape();
  rows_shape[d] = 1;
  const int64_t rows = numel_of(rows_shape);
  if (rows * len == 0) return;
  DeviceScope scope(x);
  const StridedIndexer<2> ix = make_indexer<2>(rows_shape, {x.strides(), out.strides()});
  // A warp per row, or a whole block for long rows.
  const dim3 block = len < 1024 ? dim3(kWarp, kThreads / kWarp) : dim3(kThreads, 1);
  const auto grid = static_cast<unsigned>(std::min<int64_t>((rows + block.y - 1) / block.y, 65535));
  visit_floating(x.dtype(), "softmax", [&]<typename D>() {
    auto kernel = log ? softmax_kernel<D, true> : softmax_kernel<D, false>;
    kernel<<<grid, block, 0, stream_of(x)>>>(static_cast<const D*>(x.data_ptr()),
                                             static_cast<D*>(out.data_ptr()), rows, len,
                                             x.strides()[d], out.strides()[d], queries, causal, ix);
  });
  REMAT_CUDA_LAUNCH_CHECK("softmax_kernel");
}

}  // namespace remat::kernels::cuda
