// Softmax and log-softmax on the GPU (contract: kernels/softmax.h): a group
// of blockDim.x threads per row (a warp, or a whole block for long rows),
// blockDim.y rows per block; bfloat16/float16 accumulate in float32.
#include <cmath>
#include <limits>

#include "kernels/cuda/common.cuh"
#include "kernels/softmax.h"

namespace remat::kernels::cuda {
namespace {

// The row is read three times (max, sum of exponentials, output); the later
// reads mostly hit the cache.
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

// One reduction over the row (sum(g * y), log: sum(g)), then the gradient;
// the second read of g and y mostly hits the cache.
template <typename D, bool kLog>
__global__ void softmax_backward_kernel(const D* g, const D* y, D* dx, int64_t rows, int64_t len,
                                        int64_t gs, int64_t ys, int64_t dxs, StridedIndexer<3> ix) {
  using A = acc_t<D>;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    int64_t off[3];
    ix.offsets(r, off);
    const D *gr = g + off[0], *yr = y + off[1];
    D* dxr = dx + off[2];
    A total = 0;
    for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
      total += kLog ? to_acc(gr[k * gs]) : to_acc(gr[k * gs]) * to_acc(yr[k * ys]);
    }
    total = group_reduce(
        total, [](A a, A b) { return a + b; }, A(0));
    for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
      const A gk = to_acc(gr[k * gs]), yk = to_acc(yr[k * ys]);
      dxr[k * dxs] = from_acc<D>(kLog ? gk - std::exp(yk) * total : yk * (gk - total));
    }
  }
}

// A warp per row, or a whole block for long rows.
dim3 row_block(int64_t len) {
  return len < 1024 ? dim3(kWarp, kThreads / kWarp) : dim3(kThreads, 1);
}

unsigned row_grid(int64_t rows, dim3 block) {
  return static_cast<unsigned>(std::min<int64_t>((rows + block.y - 1) / block.y, 65535));
}

// The shape of the rows along dim: every index of the other dims.
Shape rows_shape_of(const Shape& shape, size_t dim) {
  Shape rows = shape;
  rows[dim] = 1;
  return rows;
}

void softmax_forward(const Tensor& x, int64_t dim, bool log, bool causal, const Tensor& out) {
  const auto d = static_cast<size_t>(dim);
  const int64_t len = x.shape()[d];
  const int64_t queries = causal ? x.shape()[d - 1] : 1;
  const Shape rows_shape = rows_shape_of(x.shape(), d);
  const int64_t rows = numel_of(rows_shape);
  if (rows * len == 0) return;
  DeviceScope scope(x);
  const StridedIndexer<2> ix = make_indexer<2>(rows_shape, {x.strides(), out.strides()});
  const dim3 block = row_block(len);
  visit_floating(x.dtype(), "softmax", [&]<typename D>() {
    auto kernel = log ? softmax_kernel<D, true> : softmax_kernel<D, false>;
    kernel<<<row_grid(rows, block), block, 0, stream_of(x)>>>(
        static_cast<const D*>(x.data_ptr()), static_cast<D*>(out.data_ptr()), rows, len,
        x.strides()[d], out.strides()[d], queries, causal, ix);
  });
  REMAT_CUDA_LAUNCH_CHECK("softmax_kernel");
}

void softmax_backward(const Tensor& g, const Tensor& y, int64_t dim, bool log,
                      const Tensor& grad_x) {
  const auto d = static_cast<size_t>(dim);
  const int64_t len = y.shape()[d];
  const Shape rows_shape = rows_shape_of(y.shape(), d);
  const int64_t rows = numel_of(rows_shape);
  if (rows * len == 0) return;
  DeviceScope scope(y);
  const StridedIndexer<3> ix =
      make_indexer<3>(rows_shape, {g.strides(), y.strides(), grad_x.strides()});
  const dim3 block = row_block(len);
  visit_floating(y.dtype(), "softmax_backward", [&]<typename D>() {
    auto kernel = log ? softmax_backward_kernel<D, true> : softmax_backward_kernel<D, false>;
    kernel<<<row_grid(rows, block), block, 0, stream_of(y)>>>(
        static_cast<const D*>(g.data_ptr()), static_cast<const D*>(y.data_ptr()),
        static_cast<D*>(grad_x.data_ptr()), rows, len, g.strides()[d], y.strides()[d],
        grad_x.strides()[d], ix);
  });
  REMAT_CUDA_LAUNCH_CHECK("softmax_backward_kernel");
}

}  // namespace

const SoftmaxKernels softmax_kernels{softmax_forward, softmax_backward};

}  // namespace remat::kernels::cuda
