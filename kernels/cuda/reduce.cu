// Reductions on the GPU (contract: kernels/reduce.h): sums by rows or
// columns of the kept dims, split across blocks when few outputs are long;
// max along a dim a warp per output.
#include "kernels/reduce.h"

#include <algorithm>

#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/elementwise.h"

namespace remat::kernels::cuda {
namespace {

// Blocks a reduction aims for (several per SM): below it, long reductions are
// split into chunks summed by separate blocks, then their partial sums.
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kMaxSplits = 1024;
// Elements a block sums at least, so that splitting pays for the second pass.
constexpr int64_t kMinBlockWork = 8192;

// Sums accumulate in acc_t; integers in int64, as on the CPU.
template <typename D>
using sum_acc_t = std::conditional_t<std::is_integral_v<D>, int64_t, acc_t<D>>;

// Element offset at a linear index; one multiply when the dims merged into one.
__device__ int64_t offset_at(const StridedIndexer<1>& ix, int64_t linear) {
  if (ix.ndim == 1) return linear * ix.strides[0][0];
  int64_t off[1];
  ix.offsets(linear, off);
  return off[0];
}

// Row mode: the blockDim.x threads of a group sum one output's reduced
// elements (coalesced when those are contiguous); blockDim.y groups per block.
// Block row blockIdx.y sums the chunk [blockIdx.y * chunk, + chunk) of them and
// writes out[i * gridDim.y + blockIdx.y] (partial sums when gridDim.y > 1).
template <typename In, typename Out, typename A>
__global__ void sum_rows_kernel(const In* x, Out* out, int64_t outer, int64_t inner, int64_t chunk,
                                StridedIndexer<1> kept, StridedIndexer<1> reduced, A scale) {
  const int64_t begin = blockIdx.y * chunk, end = min(inner, begin + chunk);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y; i < outer;
       i += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const In* base = x + offset_at(kept, i);
    A acc = 0;
    for (int64_t r = begin + threadIdx.x; r < end; r += blockDim.x) {
      acc += to_acc(base[offset_at(reduced, r)]);
    }
    acc = group_reduce(
        acc, [](A a, A b) { return a + b; }, A(0));
    if (threadIdx.x == 0) out[i * gridDim.y + blockIdx.y] = from_acc<Out>(acc * scale);
  }
}

// Column mode: consecutive outputs are adjacent in memory (a kept dim is
// innermost), so thread x of a block takes one output, reads coalesced with
// its neighbours, and the blockDim.y threads of a column split its reduced
// elements, added up in shared memory. Chunks and outputs as in row mode.
template <typename In, typename Out, typename A>
__global__ void sum_columns_kernel(const In* x, Out* out, int64_t outer, int64_t inner,
                                   int64_t chunk, StridedIndexer<1> kept, StridedIndexer<1> reduced,
                                   A scale) {
  __shared__ A partial[kThreads / kWarp][kWarp + 1];
  const int64_t begin = blockIdx.y * chunk, end = min(inner, begin + chunk);
  for (int64_t first = blockIdx.x * static_cast<int64_t>(kWarp); first < outer;
       first += static_cast<int64_t>(gridDim.x) * kWarp) {
    const int64_t i = first + threadIdx.x;
    A acc = 0;
    if (i < outer) {
      const In* base = x + offset_at(kept, i);
      for (int64_t r = begin + threadIdx.y; r < end; r += blockDim.y) {
        acc += to_acc(base[offset_at(reduced, r)]);
      }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && i < outer) {
      for (unsigned k = 1; k < blockDim.y; ++k) acc += partial[k][threadIdx.x];
      out[i * gridDim.y + blockIdx.y] = from_acc<Out>(acc * scale);
    }
    __syncthreads();  // partial is rewritten for the next columns
  }
}

// out[i] = scale * sum of x over the reduced dims at kept index i. Long
// reductions with few outputs run in two passes through a workspace of
// partial sums (in A), the second pass being a row reduction of them.
template <typename In, typename Out, typename A>
void sum_pass(const Tensor& on, const In* x, Out* out, const Shape& kept_shape,
              const Strides& kept_strides, const Shape& reduced_shape,
              const Strides& reduced_strides, A scale) {
  const int64_t outer = numel_of(kept_shape), inner = numel_of(reduced_shape);
  if (outer == 0) return;
  const StridedIndexer<1> kept = make_indexer<1>(kept_shape, {kept_strides});
  const StridedIndexer<1> reduced = make_indexer<1>(reduced_shape, {reduced_strides});
  const bool columns =
      outer > 1 && kept.strides[0][kept.ndim - 1] == 1 && reduced.strides[0][reduced.ndim - 1] != 1;
  // Rows: a warp per output, or a whole block for long rows.
  const dim3 block = columns || inner < 1024 ? dim3(kWarp, kThreads / kWarp) : dim3(kThreads, 1);
  const int64_t per_block = columns ? kWarp : block.y;  // outputs
  const int64_t blocks = (outer + per_block - 1) / per_block;
  int64_t splits = 1;
  if (blocks < kTargetBlocks) {
    const int64_t min_chunk = std::max<int64_t>(1, kMinBlockWork / per_block);
    splits = std::clamp<int64_t>(std::min((kTargetBlocks + blocks - 1) / blocks, inner / min_chunk),
                                 1, kMaxSplits);
  }
  const int64_t chunk = std::max<int64_t>(1, (inner + splits - 1) / splits);
  splits = std::max<int64_t>(1, (inner + chunk - 1) / chunk);
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(blocks, 65535)),
                  static_cast<unsigned>(splits));
  const cudaStream_t stream = stream_of(on);

  auto launch = [&]<typename O>(O* dst, A s) {
    if (columns) {
      sum_columns_kernel<<<grid, block, 0, stream>>>(x, dst, outer, inner, chunk, kept, reduced, s);
      REMAT_CUDA_LAUNCH_CHECK("sum_columns_kernel");
    } else {
      sum_rows_kernel<<<grid, block, 0, stream>>>(x, dst, outer, inner, chunk, kept, reduced, s);
      REMAT_CUDA_LAUNCH_CHECK("sum_rows_kernel");
    }
  };
  if (splits == 1) {
    launch(out, scale);
    return;
  }
  memory::Allocation partial =
      workspace(on, static_cast<size_t>(outer * splits) * sizeof(A));  // [outer, splits]
  A* p = static_cast<A*>(partial.get());
  launch(p, A(1));
  sum_pass<A, Out, A>(on, p, out, Shape{outer}, Strides{splits}, Shape{splits}, Strides{1}, scale);
}

// (value, index) pairs in the order max keeps: a NaN beats any number, the
// larger number wins, and among equals (or NaNs) the lower index; index -1
// (no element) loses to everything. A total order, so any combination order
// gives the CPU's sequential answer.
template <typename A>
__device__ bool beats(A v, int64_t k, A best, int64_t best_k) {
  if (k < 0) return false;
  if (best_k < 0) return true;
  const bool v_nan = v != v, best_nan = best != best;
  if (v_nan || best_nan) return v_nan && (!best_nan || k < best_k);
  return v > best || (v == best && k < best_k);
}

// A warp per output: lanes scan strided elements, then merge by shuffles.
template <typename D>
__global__ void max_along_kernel(const D* x, D* values, int64_t* indices, int64_t outer,
                                 int64_t len, int64_t stride, StridedIndexer<1> kept) {
  using A = acc_t<D>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y; i < outer;
       i += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const D* base = x + offset_at(kept, i);
    A best = 0;
    int64_t best_k = -1;
    for (int64_t k = threadIdx.x; k < len; k += kWarp) {
      const A v = to_acc(base[k * stride]);
      if (beats(v, k, best, best_k)) {
        best = v;
        best_k = k;
      }
    }
    for (int o = kWarp / 2; o > 0; o /= 2) {
      const A v = __shfl_xor_sync(kFullMask, best, o);
      const int64_t k = __shfl_xor_sync(kFullMask, best_k, o);
      if (beats(v, k, best, best_k)) {
        best = v;
        best_k = k;
      }
    }
    if (threadIdx.x == 0) {
      values[i] = from_acc<D>(best);
      indices[i] = best_k;
    }
  }
}

// Offsets over out's shape without dim: of out (before the index along dim),
// of grad and of indices.
template <typename D>
__global__ void scatter_along_kernel(const D* grad, const int64_t* indices, D* out, int64_t n,
                                     int64_t stride, StridedIndexer<3> ix) {
  REMAT_GRID_STRIDE_LOOP(i, n) {
    int64_t off[3];
    ix.offsets(i, off);
    out[off[0] + indices[off[2]] * stride] = grad[off[1]];
  }
}

void sum(const Tensor& x, const std::vector<int64_t>& dims, double scale, const Tensor& out) {
  check_contiguous("sum", {out});
  REMAT_CHECK(out.dtype() == x.dtype() && out.device() == x.device(),
              "sum on CUDA: output {} must be of the input's dtype and device ({})",
              TensorMeta::of(out).str(), TensorMeta::of(x).str());
  const ReductionLayout l = split_dims(x, dims);
  DeviceScope scope(x);
  visit_arith(x.dtype(), "sum", [&]<typename D>() {
    using A = sum_acc_t<D>;
    sum_pass<D, D, A>(x, static_cast<const D*>(x.data_ptr()), static_cast<D*>(out.data_ptr()),
                      l.kept_shape, l.kept_strides, l.reduced_shape, l.reduced_strides,
                      static_cast<A>(scale));
  });
}

void max_along(const Tensor& x, int64_t dim, const Tensor& values, const Tensor& indices) {
  check_contiguous("max_along", {values, indices});
  REMAT_CHECK(values.dtype() == x.dtype() && indices.dtype() == kInt64,
              "max on CUDA: values {} and indices {} must be of dtypes {} and int64",
              TensorMeta::of(values).str(), TensorMeta::of(indices).str(), x.dtype());
  const ReductionLayout l = split_dims(x, {dim});
  const int64_t outer = numel_of(l.kept_shape);
  const int64_t len = l.reduced_shape[0], stride = l.reduced_strides[0];
  if (outer == 0 || len == 0) return;
  DeviceScope scope(x);
  const StridedIndexer<1> kept = make_indexer<1>(l.kept_shape, {l.kept_strides});
  const dim3 block(kWarp, kThreads / kWarp);
  const auto grid =
      static_cast<unsigned>(std::min<int64_t>((outer + block.y - 1) / block.y, 65535));
  visit_arith(x.dtype(), "max", [&]<typename D>() {
    max_along_kernel<<<grid, block, 0, stream_of(x)>>>(
        static_cast<const D*>(x.data_ptr()), static_cast<D*>(values.data_ptr()),
        static_cast<int64_t*>(indices.data_ptr()), outer, len, stride, kept);
  });
  REMAT_CUDA_LAUNCH_CHECK("max_along_kernel");
}

void scatter_along(const Tensor& grad, const Tensor& indices, int64_t dim, const Tensor& out) {
  const ReductionLayout l = split_dims(out, {dim});
  check_contiguous("scatter_along", {out});
  REMAT_CHECK(grad.dtype() == out.dtype() && indices.dtype() == kInt64 &&
                  grad.shape() == l.kept_shape && indices.shape() == l.kept_shape,
              "max backward on CUDA: needs an output {}, and grad {} and int64 indices "
              "{} of its shape without dim {}",
              TensorMeta::of(out).str(), TensorMeta::of(grad).str(), TensorMeta::of(indices).str(),
              dim);
  elementwise_kernels.fill(out, 0.0);
  const int64_t n = numel_of(l.kept_shape);
  if (n == 0) return;
  DeviceScope scope(out);
  const StridedIndexer<3> ix =
      make_indexer<3>(l.kept_shape, {l.kept_strides, grad.strides(), indices.strides()});
  visit_floating(out.dtype(), "max backward", [&]<typename D>() {
    scatter_along_kernel<<<blocks_for(n), kThreads, 0, stream_of(out)>>>(
        static_cast<const D*>(grad.data_ptr()), static_cast<const int64_t*>(indices.data_ptr()),
        static_cast<D*>(out.data_ptr()), n, l.reduced_strides[0], ix);
  });
  REMAT_CUDA_LAUNCH_CHECK("scatter_along_kernel");
}

}  // namespace

const ReduceKernels reduce_kernels{sum, max_along, scatter_along};

}  // namespace remat::kernels::cuda
