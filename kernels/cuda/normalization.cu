// LayerNorm and BatchNorm on the GPU (contract: kernels/normalization.h).
#include <algorithm>
#include <initializer_list>
#include <utility>

#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/normalization.h"

namespace remat::kernels::cuda {
namespace {

// ---- fixed-order reductions -----------------------------------------------------

// Count, mean and sum of squared deviations of a set of values: Welford's
// update per value, Chan's formula to merge two sets. Stable in float32,
// where a sum of squares minus a squared sum would cancel.
template <typename A>
struct Moments {
  int64_t count;
  A mean, m2;

  __device__ void add(A x) {
    ++count;
    const A d = x - mean;
    mean += d / static_cast<A>(count);
    m2 += d * (x - mean);
  }
  __device__ Moments operator+(const Moments& o) const {
    if (o.count == 0) return *this;
    if (count == 0) return o;
    const int64_t n = count + o.count;
    const A d = o.mean - mean, f = static_cast<A>(o.count) / static_cast<A>(n);
    return {n, mean + d * f, m2 + o.m2 + d * d * static_cast<A>(count) * f};
  }
  template <typename F>
  __device__ void each(F f) {
    f(count);
    f(mean);
    f(m2);
  }
};

// Two sums reduced together.
template <typename A>
struct SumPair {
  A first, second;

  __device__ SumPair operator+(const SumPair& o) const {
    return {first + o.first, second + o.second};
  }
  template <typename F>
  __device__ void each(F f) {
    f(first);
    f(second);
  }
};

// Lane 0 gets the combination of v over its warp, in a fixed tree order.
template <typename V>
__device__ V warp_reduce(V v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    V other = v;
    other.each([&](auto& x) { x = __shfl_down_sync(kFullMask, x, offset); });
    v = v + other;
  }
  return v;
}

// Every thread gets the combination of v over the block. blockDim.x must be
// a multiple of the warp size (1-D blocks), and every thread must call.
template <typename V>
__device__ V block_reduce(V v) {
  __shared__ V partial[kWarp];
  const unsigned lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_reduce(v);
  __syncthreads();  // a previous call's result may still be read from partial[0]
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / kWarp ? partial[lane] : V{};
    v = warp_reduce(v);
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  return partial[0];
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- layer_norm ---------------------------------------------------------------

// One block per row; rows past the grid are strided over.
constexpr int64_t kMaxRowBlocks = int64_t{1} << 20;

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(std::min(rows, kMaxRowBlocks)); }

// Threads per row: a multiple of the warp size with about 8 values each, at most 512.
unsigned row_threads(int64_t cols) {
  unsigned t = kWarp;
  while (t < 512 && t * 8 < cols) t *= 2;
  return t;
}

template <typename D, typename A = acc_t<D>>
__global__ void layer_norm_kernel(const D* x, const D* w, const D* b, int64_t rows, int64_t cols,
                                  A eps, D* y, A* mean, A* rstd) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const D* xr = x + r * cols;
    Moments<A> m{};
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m.add(to_acc(xr[j]));
    m = block_reduce(m);
    const A mu = m.mean, rs = A(1) / sqrt(m.m2 / static_cast<A>(cols) + eps);
    if (threadIdx.x == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
    D* yr = y + r * cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      A v = (to_acc(xr[j]) - mu) * rs;
      if (w) v *= to_acc(w[j]);
      if (b) v += to_acc(b[j]);
      yr[j] = from_acc<D>(v);
    }
  }
}

// dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)) per row, w = 1 when null.
template <typename D, typename A = acc_t<D>>
__global__ void layer_norm_backward_dx_kernel(const D* g, const D* x, const D* w, const A* mean,
                                              const A* rstd, int64_t rows, int64_t cols, D* dx) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const D* gr = g + r * cols;
    const D* xr = x + r * cols;
    const A mu = mean[r], rs = rstd[r];
    SumPair<A> s{};  // sum g w, sum g w xhat
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const A gw = to_acc(gr[j]) * (w ? to_acc(w[j]) : A(1));
      s.first += gw;
      s.second += gw * (to_acc(xr[j]) - mu) * rs;
    }
    s = block_reduce(s);
    const A mean_gw = s.first / static_cast<A>(cols);
    const A mean_gw_xhat = s.second / static_cast<A>(cols);
    D* dxr = dx + r * cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const A gw = to_acc(gr[j]) * (w ? to_acc(w[j]) : A(1));
      const A xhat = (to_acc(xr[j]) - mu) * rs;
      dxr[j] = from_acc<D>(rs * (gw - mean_gw - xhat * mean_gw_xhat));
    }
  }
}

// dweight = sum over rows of g xhat and dbias = sum over rows of g, in two
// steps that keep a fixed order: blocks of 32 columns (one per lane, so rows
// are read coalesced) by kTileRows row lanes each sum one chunk of rows into a
// partial row; a second kernel adds a column's partials in chunk order.
constexpr int kTileCols = kWarp, kTileRows = 8;
constexpr int64_t kMinChunkRows = 64, kMaxRowChunks = 512;

template <typename D, typename A = acc_t<D>>
__global__ void layer_norm_affine_partial_kernel(const D* g, const D* x, const A* mean,
                                                 const A* rstd, int64_t rows, int64_t cols,
                                                 int64_t chunk_rows, SumPair<A>* partial) {
  __shared__ SumPair<A> tile[kTileRows][kTileCols];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTileCols + threadIdx.x;
  const int64_t begin = blockIdx.y * chunk_rows;
  const int64_t end = begin + chunk_rows < rows ? begin + chunk_rows : rows;
  SumPair<A> s{};  // sum g xhat, sum g
  if (col < cols) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kTileRows) {
      const A gj = to_acc(g[r * cols + col]);
      s.first += gj * (to_acc(x[r * cols + col]) - mean[r]) * rstd[r];
      s.second += gj;
    }
  }
  tile[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    for (int i = 1; i < kTileRows; ++i) s = s + tile[i][threadIdx.x];
    partial[blockIdx.y * cols + col] = s;
  }
}

template <typename D, typename A = acc_t<D>>
__global__ void layer_norm_affine_kernel(const SumPair<A>* partial, int64_t chunks, int64_t cols,
                                         D* dw, D* db) {
  REMAT_GRID_STRIDE_LOOP(col, cols) {
    SumPair<A> s{};
    for (int64_t c = 0; c < chunks; ++c) s = s + partial[c * cols + col];
    if (dw) dw[col] = from_acc<D>(s.first);
    if (db) db[col] = from_acc<D>(s.second);
  }
}

// ---- batch_norm ---------------------------------------------------------------

// x as [N, C, S] (S: the product of the spatial dims). Value i < N * S of
// channel c sits at (i / S * C + c) * S + i % S.
struct ChannelLayout {
  int64_t batch, channels, spatial;

  __host__ __device__ int64_t count() const { return batch * spatial; }
  __device__ int64_t offset(int64_t c, int64_t i) const {
    return (i / spatial * channels + c) * spatial + i % spatial;
  }
  __device__ int64_t channel(int64_t element) const { return element / spatial % channels; }
};

ChannelLayout channel_layout(const Tensor& x) {
  return {x.shape()[0], x.shape()[1], numel_of(Shape(x.shape().begin() + 2, x.shape().end()))};
}

// Blocks per channel of the per-channel reductions: about kTargetBlocks over
// all channels, each with at least kMinBlockValues values. A second kernel
// merges a channel's partial results in order.
constexpr int64_t kTargetBlocks = 1024, kMinBlockValues = 4096, kMaxSplits = 65535;

int64_t channel_splits(const ChannelLayout& l) {
  if (l.count() == 0) return 0;
  return std::clamp(
      std::min(ceil_div(l.count(), kMinBlockValues), ceil_div(kTargetBlocks, l.channels)),
      int64_t{1}, kMaxSplits);
}

dim3 split_grid(const ChannelLayout& l, int64_t splits) {
  return dim3(static_cast<unsigned>(l.channels), static_cast<unsigned>(splits));
}

// Block (c, p) reduces the p-th of gridDim.y runs of channel c's values.
template <typename D, typename A = acc_t<D>>
__global__ void batch_norm_moments_kernel(const D* x, ChannelLayout l, int64_t per_split,
                                          Moments<A>* partial) {
  const int64_t c = blockIdx.x, begin = blockIdx.y * per_split;
  const int64_t end = begin + per_split < l.count() ? begin + per_split : l.count();
  Moments<A> m{};
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) m.add(to_acc(x[l.offset(c, i)]));
  m = block_reduce(m);
  if (threadIdx.x == 0) partial[c * gridDim.y + blockIdx.y] = m;
}

template <typename A>
__global__ void batch_norm_stats_kernel(const Moments<A>* partial, int64_t channels, int64_t splits,
                                        A eps, A* mean, A* invstd, A* running_mean,
                                        int64_t running_mean_stride, A* running_var,
                                        int64_t running_var_stride, A momentum) {
  REMAT_GRID_STRIDE_LOOP(c, channels) {
    Moments<A> m{};
    for (int64_t p = 0; p < splits; ++p) m = m + partial[c * splits + p];
    const A n = static_cast<A>(m.count), var = m.m2 / n;
    mean[c] = m.mean;
    invstd[c] = A(1) / sqrt(var + eps);
    if (running_mean) {
      A& rm = running_mean[c * running_mean_stride];
      A& rv = running_var[c * running_var_stride];
      rm = (1 - momentum) * rm + momentum * m.mean;
      rv = (1 - momentum) * rv + momentum * var * n / (n - 1);
    }
  }
}

template <typename A>
__global__ void batch_norm_running_stats_kernel(const A* running_mean, int64_t running_mean_stride,
                                                const A* running_var, int64_t running_var_stride,
                                                int64_t channels, A eps, A* mean, A* invstd) {
  REMAT_GRID_STRIDE_LOOP(c, channels) {
    mean[c] = running_mean[c * running_mean_stride];
    invstd[c] = A(1) / sqrt(running_var[c * running_var_stride] + eps);
  }
}

template <typename D, typename A = acc_t<D>>
__global__ void batch_norm_apply_kernel(const D* x, ChannelLayout l, int64_t n, const A* mean,
                                        const A* invstd, const D* w, const D* b, D* y) {
  REMAT_GRID_STRIDE_LOOP(e, n) {
    const int64_t c = l.channel(e);
    const A scale = w ? invstd[c] * to_acc(w[c]) : invstd[c];
    const A shift = b ? to_acc(b[c]) : A(0);
    y[e] = from_acc<D>((to_acc(x[e]) - mean[c]) * scale + shift);
  }
}

// Block (c, p): sum g and sum g (x - mean) over its run of channel c.
template <typename D, typename A = acc_t<D>>
__global__ void batch_norm_grad_sums_kernel(const D* g, const D* x, ChannelLayout l, const A* mean,
                                            int64_t per_split, SumPair<A>* partial) {
  const int64_t c = blockIdx.x, begin = blockIdx.y * per_split;
  const int64_t end = begin + per_split < l.count() ? begin + per_split : l.count();
  const A mu = mean[c];
  SumPair<A> s{};
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t o = l.offset(c, i);
    const A gi = to_acc(g[o]);
    s.first += gi;
    s.second += gi * (to_acc(x[o]) - mu);
  }
  s = block_reduce(s);
  if (threadIdx.x == 0) partial[c * gridDim.y + blockIdx.y] = s;
}

// Per channel, what dx needs: dx = (g - shift - (x - mean) * coef) * scale.
template <typename A>
struct GradCoefs {
  A shift, coef, scale;
};

// With M values per channel and xhat = (x - mean) * invstd: dbias = sum g,
// dweight = sum g xhat, and dx = weight * invstd * (g - dbias / M - xhat *
// dweight / M) in training, weight * invstd * g otherwise (weight = 1 when null).
template <typename D, typename A = acc_t<D>>
__global__ void batch_norm_grad_coefs_kernel(const SumPair<A>* partial, int64_t channels,
                                             int64_t splits, int64_t count, const D* w,
                                             const A* invstd, bool training, D* dw, D* db,
                                             GradCoefs<A>* coefs) {
  REMAT_GRID_STRIDE_LOOP(c, channels) {
    SumPair<A> s{};
    for (int64_t p = 0; p < splits; ++p) s = s + partial[c * splits + p];
    const A is = invstd[c], n = static_cast<A>(count);
    if (dw) dw[c] = from_acc<D>(s.second * is);
    if (db) db[c] = from_acc<D>(s.first);
    if (coefs) {
      coefs[c] = {training ? s.first / n : A(0), training ? is * is * s.second / n : A(0),
                  w ? is * to_acc(w[c]) : is};
    }
  }
}

template <typename D, typename A = acc_t<D>>
__global__ void batch_norm_backward_dx_kernel(const D* g, const D* x, ChannelLayout l, int64_t n,
                                              const A* mean, const GradCoefs<A>* coefs, D* dx) {
  REMAT_GRID_STRIDE_LOOP(e, n) {
    const int64_t c = l.channel(e);
    const GradCoefs<A> k = coefs[c];
    dx[e] = from_acc<D>((to_acc(g[e]) - k.shift - (to_acc(x[e]) - mean[c]) * k.coef) * k.scale);
  }
}

// ---- host helpers ---------------------------------------------------------------

// Statistics of bfloat16/float16 inputs are float32 (what they accumulate in).
DType stat_dtype(DType x) { return is_reduced_float(x) ? kFloat32 : x; }

// Each defined statistic must have the dtype of x's statistics.
void check_stats(const char* op, const Tensor& x,
                 std::initializer_list<std::pair<const Tensor*, const char*>> stats) {
  for (const auto& [t, role] : stats) {
    REMAT_CHECK(!t->defined() || t->dtype() == stat_dtype(x.dtype()),
                "{}: {} must be {} for input {}, got {}", op, role, stat_dtype(x.dtype()),
                TensorMeta::of(x).str(), TensorMeta::of(*t).str());
  }
}

// The values per row of layer_norm: the product of x's last normalized_ndim dims.
int64_t normalized_numel(const Tensor& x, int64_t normalized_ndim) {
  return numel_of(Shape(x.shape().end() - normalized_ndim, x.shape().end()));
}

void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t normalized_ndim,
                double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  check_contiguous("layer_norm", {x, weight, bias, y, mean, rstd});
  check_stats("layer_norm", x, {{&mean, "mean"}, {&rstd, "rstd"}});
  const int64_t cols = normalized_numel(x, normalized_ndim);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (rows == 0) return;
  DeviceScope scope(x);
  visit_floating(x.dtype(), "layer_norm", [&]<typename D>() {
    using A = acc_t<D>;
    layer_norm_kernel<D><<<row_blocks(rows), row_threads(cols), 0, stream_of(x)>>>(
        in_ptr<D>(x), in_ptr<D>(weight), in_ptr<D>(bias), rows, cols, static_cast<A>(eps),
        out_ptr<D>(y), out_ptr<A>(mean), out_ptr<A>(rstd));
    REMAT_CUDA_LAUNCH_CHECK("layer_norm_kernel");
  });
}

void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                         const Tensor& mean, const Tensor& rstd, int64_t normalized_ndim,
                         const Tensor& dx, const Tensor& dweight, const Tensor& dbias) {
  check_contiguous("layer_norm_backward", {grad, x, weight, mean, rstd, dx, dweight, dbias});
  check_stats("layer_norm_backward", x, {{&mean, "mean"}, {&rstd, "rstd"}});
  const int64_t cols = normalized_numel(x, normalized_ndim);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  DeviceScope scope(x);
  const cudaStream_t stream = stream_of(x);
  visit_floating(x.dtype(), "layer_norm_backward", [&]<typename D>() {
    using A = acc_t<D>;
    if (dx.defined() && rows > 0) {
      layer_norm_backward_dx_kernel<D><<<row_blocks(rows), row_threads(cols), 0, stream>>>(
          in_ptr<D>(grad), in_ptr<D>(x), in_ptr<D>(weight), in_ptr<A>(mean), in_ptr<A>(rstd), rows,
          cols, out_ptr<D>(dx));
      REMAT_CUDA_LAUNCH_CHECK("layer_norm_backward_dx_kernel");
    }
    if (!(dweight.defined() || dbias.defined()) || cols == 0) return;
    const int64_t chunks = std::min(ceil_div(rows, kMinChunkRows), kMaxRowChunks);
    memory::Allocation partial;
    if (chunks > 0) {
      partial = workspace(x, static_cast<size_t>(chunks * cols) * sizeof(SumPair<A>));
      const dim3 grid(static_cast<unsigned>(ceil_div(cols, kTileCols)),
                      static_cast<unsigned>(chunks));
      layer_norm_affine_partial_kernel<D><<<grid, dim3(kTileCols, kTileRows), 0, stream>>>(
          in_ptr<D>(grad), in_ptr<D>(x), in_ptr<A>(mean), in_ptr<A>(rstd), rows, cols,
          ceil_div(rows, chunks), static_cast<SumPair<A>*>(partial.get()));
      REMAT_CUDA_LAUNCH_CHECK("layer_norm_affine_partial_kernel");
    }
    layer_norm_affine_kernel<D><<<blocks_for(cols), kThreads, 0, stream>>>(
        static_cast<const SumPair<A>*>(partial.get()), chunks, cols, out_ptr<D>(dweight),
        out_ptr<D>(dbias));
    REMAT_CUDA_LAUNCH_CHECK("layer_norm_affine_kernel");
  });
}

void batch_norm_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& invstd,
                      const Tensor& running_mean, const Tensor& running_var, double momentum) {
  check_contiguous("batch_norm", {x, mean, invstd});
  check_stats("batch_norm", x,
              {{&mean, "mean"},
               {&invstd, "invstd"},
               {&running_mean, "running_mean"},
               {&running_var, "running_var"}});
  const ChannelLayout l = channel_layout(x);
  REMAT_CHECK(l.count() > 0, "batch_norm: no values per channel in {}", TensorMeta::of(x).str());
  if (l.channels == 0) return;
  DeviceScope scope(x);
  const cudaStream_t stream = stream_of(x);
  // Written through their strides: the update must land in the caller's tensors.
  const int64_t rm_stride = running_mean.defined() ? running_mean.strides()[0] : 0;
  const int64_t rv_stride = running_var.defined() ? running_var.strides()[0] : 0;
  const int64_t splits = channel_splits(l);
  visit_floating(x.dtype(), "batch_norm", [&]<typename D>() {
    using A = acc_t<D>;
    memory::Allocation partial =
        workspace(x, static_cast<size_t>(l.channels * splits) * sizeof(Moments<A>));
    batch_norm_moments_kernel<D><<<split_grid(l, splits), kThreads, 0, stream>>>(
        in_ptr<D>(x), l, ceil_div(l.count(), splits), static_cast<Moments<A>*>(partial.get()));
    REMAT_CUDA_LAUNCH_CHECK("batch_norm_moments_kernel");
    batch_norm_stats_kernel<A><<<blocks_for(l.channels), kThreads, 0, stream>>>(
        static_cast<const Moments<A>*>(partial.get()), l.channels, splits, static_cast<A>(eps),
        out_ptr<A>(mean), out_ptr<A>(invstd), out_ptr<A>(running_mean), rm_stride,
        out_ptr<A>(running_var), rv_stride, static_cast<A>(momentum));
    REMAT_CUDA_LAUNCH_CHECK("batch_norm_stats_kernel");
  });
}

void batch_norm_running_stats(const Tensor& running_mean, const Tensor& running_var, double eps,
                              const Tensor& mean, const Tensor& invstd) {
  check_contiguous("batch_norm", {mean, invstd});
  const int64_t channels = mean.numel();
  if (channels == 0) return;
  DeviceScope scope(mean);
  visit_float_or_double(mean.dtype(), "batch_norm", [&]<typename A>() {
    for (const Tensor* t : {&running_mean, &running_var, &invstd}) {
      REMAT_CHECK(t->dtype() == mean.dtype(), "batch_norm: statistics of mixed dtypes: {} and {}",
                  TensorMeta::of(mean).str(), TensorMeta::of(*t).str());
    }
    batch_norm_running_stats_kernel<A><<<blocks_for(channels), kThreads, 0, stream_of(mean)>>>(
        in_ptr<A>(running_mean), running_mean.strides()[0], in_ptr<A>(running_var),
        running_var.strides()[0], channels, static_cast<A>(eps), out_ptr<A>(mean),
        out_ptr<A>(invstd));
    REMAT_CUDA_LAUNCH_CHECK("batch_norm_running_stats_kernel");
  });
}

void batch_norm_apply(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                      const Tensor& weight, const Tensor& bias, const Tensor& y) {
  check_contiguous("batch_norm", {x, mean, invstd, weight, bias, y});
  check_stats("batch_norm", x, {{&mean, "mean"}, {&invstd, "invstd"}});
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceScope scope(x);
  const ChannelLayout l = channel_layout(x);
  visit_floating(x.dtype(), "batch_norm", [&]<typename D>() {
    using A = acc_t<D>;
    batch_norm_apply_kernel<D><<<blocks_for(n), kThreads, 0, stream_of(x)>>>(
        in_ptr<D>(x), l, n, in_ptr<A>(mean), in_ptr<A>(invstd), in_ptr<D>(weight), in_ptr<D>(bias),
        out_ptr<D>(y));
    REMAT_CUDA_LAUNCH_CHECK("batch_norm_apply_kernel");
  });
}

void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                         const Tensor& mean, const Tensor& invstd, bool training, const Tensor& dx,
                         const Tensor& dweight, const Tensor& dbias) {
  check_contiguous("batch_norm_backward", {grad, x, weight, mean, invstd, dx, dweight, dbias});
  check_stats("batch_norm_backward", x, {{&mean, "mean"}, {&invstd, "invstd"}});
  const ChannelLayout l = channel_layout(x);
  if (l.channels == 0) return;
  DeviceScope scope(x);
  const cudaStream_t stream = stream_of(x);
  const bool need_sums = dweight.defined() || dbias.defined() || (dx.defined() && training);
  const int64_t splits = need_sums ? channel_splits(l) : 0;
  visit_floating(x.dtype(), "batch_norm_backward", [&]<typename D>() {
    using A = acc_t<D>;
    memory::Allocation partial, coefs;
    if (splits > 0) {
      partial = workspace(x, static_cast<size_t>(l.channels * splits) * sizeof(SumPair<A>));
      batch_norm_grad_sums_kernel<D><<<split_grid(l, splits), kThreads, 0, stream>>>(
          in_ptr<D>(grad), in_ptr<D>(x), l, in_ptr<A>(mean), ceil_div(l.count(), splits),
          static_cast<SumPair<A>*>(partial.get()));
      REMAT_CUDA_LAUNCH_CHECK("batch_norm_grad_sums_kernel");
    }
    if (dx.defined()) {
      coefs = workspace(x, static_cast<size_t>(l.channels) * sizeof(GradCoefs<A>));
    }
    batch_norm_grad_coefs_kernel<D><<<blocks_for(l.channels), kThreads, 0, stream>>>(
        static_cast<const SumPair<A>*>(partial.get()), l.channels, splits, l.count(),
        in_ptr<D>(weight), in_ptr<A>(invstd), training, out_ptr<D>(dweight), out_ptr<D>(dbias),
        static_cast<GradCoefs<A>*>(coefs.get()));
    REMAT_CUDA_LAUNCH_CHECK("batch_norm_grad_coefs_kernel");
    if (dx.defined() && x.numel() > 0) {
      batch_norm_backward_dx_kernel<D><<<blocks_for(x.numel()), kThreads, 0, stream>>>(
          in_ptr<D>(grad), in_ptr<D>(x), l, x.numel(), in_ptr<A>(mean),
          static_cast<const GradCoefs<A>*>(coefs.get()), out_ptr<D>(dx));
      REMAT_CUDA_LAUNCH_CHECK("batch_norm_backward_dx_kernel");
    }
  });
}

}  // namespace

const NormalizationKernels normalization_kernels{layer_norm,       layer_norm_backward,
                                                 batch_norm_stats, batch_norm_running_stats,
                                                 batch_norm_apply, batch_norm_backward};

}  // namespace remat::kernels::cuda
