// 2-d pooling on the GPU (contract: kernels/pool.h). Own kernels rather than cuDNN pooling: cuDNN
// returns no argmax positions (max_pool2d's backward scatters through them), and its
// average-pooling backward wants the forward's input and output, which the op does not keep.
// Backward kernels gather (or, for max, sum per warp in a fixed order), so
// results do not depend on thread timing.
#include <algorithm>
#include <limits>

#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/pool.h"

namespace remat::kernels::cuda {
namespace {

struct Range {
  int64_t begin, end;
  __device__ int64_t size() const { return end - begin; }
};

// The windows of max_pool2d and avg_pool2d along one dim: output o reads
// [o*stride - pad, o*stride - pad + kernel) clipped to the input's `in`
// elements; a mean divides by the whole kernel (padding counts as zeros).
struct FixedWindows {
  int64_t kernel, stride, pad, in, out;

  __device__ Range of(int64_t o) const {
    const int64_t start = o * stride - pad;
    return {std::max<int64_t>(start, 0), std::min(start + kernel, in)};
  }
  // Exactly the outputs whose windows hold input i (possibly none).
  __device__ Range covering(int64_t i) const {
    const int64_t low = i + pad - kernel;
    return {low < 0 ? 0 : low / stride + 1, std::min((i + pad) / stride + 1, out)};
  }
  __device__ int64_t divisor(const Range&) const { return kernel; }
};

// PyTorch's adaptive bins along one dim: output o averages
// [floor(o*in/out), ceil((o+1)*in/out)), divided by its own size.
struct AdaptiveWindows {
  int64_t in, out;

  __device__ Range of(int64_t o) const { return {o * in / out, ((o + 1) * in + out - 1) / out}; }
  // Bin o holds i iff floor(i*out/in) <= o < ceil((i+1)*out/in).
  __device__ Range covering(int64_t i) const {
    return {i * out / in, ((i + 1) * out + in - 1) / in};
  }
  __device__ int64_t divisor(const Range& r) const { return r.size(); }
};

// One thread per output of n = planes*oH*oW: the window's maximum and its
// flat position in the plane. As on the CPU, padding is -inf, a NaN wins
// (the last one in the window), and ties keep the first position.
template <typename D>
__global__ void max_pool_kernel(const D* x, D* values, int64_t* indices, int64_t n,
                                FixedWindows rows, FixedWindows cols) {
  using A = acc_t<D>;
  const int64_t out_area = rows.out * cols.out;
  REMAT_GRID_STRIDE_LOOP(o, n) {
    const int64_t plane = o / out_area, oy = o % out_area / cols.out, ox = o % cols.out;
    const Range ry = rows.of(oy), rx = cols.of(ox);
    const D* src = x + plane * rows.in * cols.in;
    A best = -std::numeric_limits<A>::infinity();
    int64_t best_at = ry.begin * cols.in + rx.begin;
    for (int64_t iy = ry.begin; iy < ry.end; ++iy) {
      for (int64_t ix = rx.begin; ix < rx.end; ++ix) {
        const A v = to_acc(src[iy * cols.in + ix]);
        if (v > best || isnan(v)) {
          best = v;
          best_at = iy * cols.in + ix;
        }
      }
    }
    values[o] = from_acc<D>(best);
    indices[o] = best_at;
  }
}

// One warp per plane: zeroes the plane's gradient, then adds the outputs'
// gradients at their recorded positions 32 outputs at a time. Lanes that
// share a position sum their values in lane order and the lowest of them
// writes, so the result is the same on every run (no atomics).
template <typename D>
__global__ void max_pool_backward_kernel(const D* grad_out, const int64_t* indices, D* grad_in,
                                         int64_t planes, int64_t in_area, int64_t out_area) {
  using A = acc_t<D>;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  for (int64_t plane = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
       plane < planes; plane += warps) {
    D* dst = grad_in + plane * in_area;
    for (int64_t i = lane; i < in_area; i += kWarp) dst[i] = from_acc<D>(A(0));
    __syncwarp();
    const int64_t base = plane * out_area;
    for (int64_t first = 0; first < out_area; first += kWarp) {
      const int64_t o = first + lane;
      const bool valid = o < out_area;
      const int64_t at = valid ? indices[base + o] : -1;
      const A g = valid ? to_acc(grad_out[base + o]) : A(0);
      const unsigned same = __match_any_sync(kFullMask, at);
      A total = 0;
      for (int k = 0; k < kWarp; ++k) {
        const A v = __shfl_sync(kFullMask, g, k);
        if (same & (1u << k)) total += v;
      }
      if (valid && lane == __ffs(static_cast<int>(same)) - 1) {
        dst[at] = from_acc<D>(to_acc(dst[at]) + total);
      }
      __syncwarp();  // this chunk's writes land before the next chunk reads
    }
  }
}

// Window means over planes of rows.in x cols.in inputs and rows.out x cols.out
// outputs. Forward: one thread per output sums its window. Backward: one
// thread per input element gathers grad/divisor from the outputs whose
// windows hold it, in output order (the order the CPU kernel adds them in).
template <typename D, typename Windows, bool Backward>
__global__ void window_mean_kernel(const D* src, D* dst, int64_t n, Windows rows, Windows cols) {
  using A = acc_t<D>;
  const int64_t in_area = rows.in * cols.in, out_area = rows.out * cols.out;
  REMAT_GRID_STRIDE_LOOP(i, n) {
    if constexpr (Backward) {
      const int64_t plane = i / in_area, iy = i % in_area / cols.in, ix = i % cols.in;
      const Range oys = rows.covering(iy), oxs = cols.covering(ix);
      const D* grad = src + plane * out_area;
      A total = 0;
      for (int64_t oy = oys.begin; oy < oys.end; ++oy) {
        const int64_t row_divisor = rows.divisor(rows.of(oy));
        for (int64_t ox = oxs.begin; ox < oxs.end; ++ox) {
          const A scale = A(1) / static_cast<A>(row_divisor * cols.divisor(cols.of(ox)));
          total += to_acc(grad[oy * cols.out + ox]) * scale;
        }
      }
      dst[i] = from_acc<D>(total);
    } else {
      const int64_t plane = i / out_area, oy = i % out_area / cols.out, ox = i % cols.out;
      const Range ry = rows.of(oy), rx = cols.of(ox);
      const D* x = src + plane * in_area;
      A total = 0;
      for (int64_t iy = ry.begin; iy < ry.end; ++iy) {
        for (int64_t ix = rx.begin; ix < rx.end; ++ix) total += to_acc(x[iy * cols.in + ix]);
      }
      dst[i] = from_acc<D>(total * (A(1) / static_cast<A>(rows.divisor(ry) * cols.divisor(rx))));
    }
  }
}

// The windows of a [N, C, H, W] input pooled to [N, C, oH, oW].
FixedWindows fixed_rows(const Pool2dParams& p, const Shape& input, const Shape& output) {
  return {p.kernel_h, p.stride_h, p.pad_h, input[2], output[2]};
}
FixedWindows fixed_cols(const Pool2dParams& p, const Shape& input, const Shape& output) {
  return {p.kernel_w, p.stride_w, p.pad_w, input[3], output[3]};
}

// Forward (src = x, dst = out) or backward (src = grad_out, dst = grad_input)
// of a window mean; dst is written whole.
template <bool Backward, typename Windows>
void window_means(const char* op, const Tensor& src, const Tensor& dst, Windows rows,
                  Windows cols) {
  check_contiguous(op, {src, dst});
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceScope scope(dst);
  visit_floating(dst.dtype(), op, [&]<typename D>() {
    window_mean_kernel<D, Windows, Backward><<<blocks_for(n), kThreads, 0, stream_of(dst)>>>(
        static_cast<const D*>(src.data_ptr()), static_cast<D*>(dst.data_ptr()), n, rows, cols);
  });
  REMAT_CUDA_LAUNCH_CHECK("window_mean_kernel");
}

void max_pool2d(const Tensor& x, const Pool2dParams& p, const Tensor& values,
                const Tensor& indices) {
  check_contiguous("max_pool2d", {x, values, indices});
  const int64_t n = values.numel();
  if (n == 0) return;
  DeviceScope scope(values);
  const FixedWindows rows = fixed_rows(p, x.shape(), values.shape()),
                     cols = fixed_cols(p, x.shape(), values.shape());
  visit_floating(values.dtype(), "max_pool2d", [&]<typename D>() {
    max_pool_kernel<D><<<blocks_for(n), kThreads, 0, stream_of(values)>>>(
        static_cast<const D*>(x.data_ptr()), static_cast<D*>(values.data_ptr()),
        static_cast<int64_t*>(indices.data_ptr()), n, rows, cols);
  });
  REMAT_CUDA_LAUNCH_CHECK("max_pool_kernel");
}

void max_pool2d_backward(const Tensor& g, const Tensor& idx, const Tensor& grad_input) {
  check_contiguous("max_pool2d_backward", {g, idx, grad_input});
  if (grad_input.numel() == 0) return;
  DeviceScope scope(grad_input);
  const Shape &in = grad_input.shape(), &out = g.shape();
  const int64_t planes = in[0] * in[1];
  visit_floating(grad_input.dtype(), "max_pool2d_backward", [&]<typename D>() {
    max_pool_backward_kernel<D><<<blocks_for(planes * kWarp), kThreads, 0, stream_of(grad_input)>>>(
        static_cast<const D*>(g.data_ptr()), static_cast<const int64_t*>(idx.data_ptr()),
        static_cast<D*>(grad_input.data_ptr()), planes, in[2] * in[3], out[2] * out[3]);
  });
  REMAT_CUDA_LAUNCH_CHECK("max_pool_backward_kernel");
}

void avg_pool2d(const Tensor& x, const Pool2dParams& p, const Tensor& out) {
  window_means<false>("avg_pool2d", x, out, fixed_rows(p, x.shape(), out.shape()),
                      fixed_cols(p, x.shape(), out.shape()));
}

void avg_pool2d_backward(const Tensor& grad_out, const Pool2dParams& p, const Tensor& grad_input) {
  const Shape &in = grad_input.shape(), &out = grad_out.shape();
  window_means<true>("avg_pool2d_backward", grad_out, grad_input, fixed_rows(p, in, out),
                     fixed_cols(p, in, out));
}

void adaptive_avg_pool2d(const Tensor& x, const Tensor& out) {
  const Shape &in = x.shape(), &o = out.shape();
  window_means<false>("adaptive_avg_pool2d", x, out, AdaptiveWindows{in[2], o[2]},
                      AdaptiveWindows{in[3], o[3]});
}

void adaptive_avg_pool2d_backward(const Tensor& grad_out, const Tensor& grad_input) {
  const Shape &in = grad_input.shape(), &o = grad_out.shape();
  window_means<true>("adaptive_avg_pool2d_backward", grad_out, grad_input,
                     AdaptiveWindows{in[2], o[2]}, AdaptiveWindows{in[3], o[3]});
}

}  // namespace

const PoolKernels pool_kernels{max_pool2d,          max_pool2d_backward,
                               avg_pool2d,          avg_pool2d_backward,
                               adaptive_avg_pool2d, adaptive_avg_pool2d_backward};

}  // namespace remat::kernels::cuda
