// 2-d pooling on the CPU (contract: kernels/pool.h). Each (n, c) plane is
// independent, so the kernels run planes in parallel and backward
// accumulates without atomics.
#include "kernels/pool.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/contiguous.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

// N*C planes of an input [N, C, H, W] and an output [N, C, oH, oW].
struct PlaneDims {
  int64_t planes, h, w, oh, ow;
  int64_t in_area() const { return h * w; }
  int64_t out_area() const { return oh * ow; }
};

PlaneDims plane_dims(const Shape& input, const Shape& output) {
  return {input[0] * input[1], input[2], input[3], output[2], output[3]};
}

// A window's extent along one dim, clipped to the input.
struct Range {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

Range window(int64_t o, int64_t stride, int64_t pad, int64_t kernel, int64_t size) {
  const int64_t start = o * stride - pad;
  return {std::max<int64_t>(start, 0), std::min(start + kernel, size)};
}

Range adaptive_bin(int64_t i, int64_t in, int64_t out) {
  return {i * in / out, ((i + 1) * in + out - 1) / out};
}

// fn(plane) for every plane, in parallel once the work pays for the threads.
template <typename Fn>
void for_each_plane(int64_t planes, int64_t work_per_plane, Fn&& fn) {
  parallel_for(planes, planes * work_per_plane >= 2 * kParallelGrain, fn);
}

// Window means. Forward: out[o] = sum of o's window / divisor. Backward: each
// element of o's window += grad[o] / divisor. rows(oy) and cols(ox) give a
// window's extent, divisor(rows, cols) its element count.
template <typename T, bool Backward, typename RowsFn, typename ColsFn, typename DivisorFn>
void window_means(const T* src, T* dst, const PlaneDims& d, int64_t window_area, RowsFn&& rows,
                  ColsFn&& cols, DivisorFn&& divisor) {
  for_each_plane(d.planes, d.out_area() * window_area, [&](int64_t plane) {
    const int64_t in_base = plane * d.in_area(), out_base = plane * d.out_area();
    if constexpr (Backward) std::fill(dst + in_base, dst + in_base + d.in_area(), T(0));
    for (int64_t oy = 0; oy < d.oh; ++oy) {
      const Range ry = rows(oy);
      for (int64_t ox = 0; ox < d.ow; ++ox) {
        const Range rx = cols(ox);
        const T scale = T(1) / static_cast<T>(divisor(ry, rx));
        const int64_t o = out_base + oy * d.ow + ox;
        if constexpr (Backward) {
          const T g = src[o] * scale;
          for (int64_t iy = ry.begin; iy < ry.end; ++iy) {
            for (int64_t ix = rx.begin; ix < rx.end; ++ix) dst[in_base + iy * d.w + ix] += g;
          }
        } else {
          T total = 0;
          for (int64_t iy = ry.begin; iy < ry.end; ++iy) {
            for (int64_t ix = rx.begin; ix < rx.end; ++ix) total += src[in_base + iy * d.w + ix];
          }
          dst[o] = total * scale;
        }
      }
    }
  });
}

// avg_pool2d: fixed windows whose divisor counts the padding.
template <typename T, bool Backward>
void avg_windows(const T* src, T* dst, const PlaneDims& d, const Pool2dParams& p) {
  const int64_t area = p.kernel_h * p.kernel_w;
  window_means<T, Backward>(
      src, dst, d, area,
      [&](int64_t oy) { return window(oy, p.stride_h, p.pad_h, p.kernel_h, d.h); },
      [&](int64_t ox) { return window(ox, p.stride_w, p.pad_w, p.kernel_w, d.w); },
      [area](const Range&, const Range&) { return area; });
}

// adaptive_avg_pool2d: PyTorch's bins, each divided by its own size.
template <typename T, bool Backward>
void adaptive_bins(const T* src, T* dst, const PlaneDims& d) {
  const int64_t widest = ((d.h + d.oh - 1) / d.oh + 1) * ((d.w + d.ow - 1) / d.ow + 1);
  window_means<T, Backward>(
      src, dst, d, widest, [&](int64_t oy) { return adaptive_bin(oy, d.h, d.oh); },
      [&](int64_t ox) { return adaptive_bin(ox, d.w, d.ow); },
      [](const Range& ry, const Range& rx) { return ry.size() * rx.size(); });
}

void max_pool2d(const Tensor& x, const Pool2dParams& p, const Tensor& values,
                const Tensor& indices) {
  check_contiguous("max_pool2d", {x, values, indices});
  const PlaneDims d = plane_dims(x.shape(), values.shape());
  visit_floating(x.dtype(), "max_pool2d", [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(values.data_ptr());
    int64_t* at = static_cast<int64_t*>(indices.data_ptr());
    for_each_plane(d.planes, d.out_area() * p.kernel_h * p.kernel_w, [&](int64_t plane) {
      const T* src = in + plane * d.in_area();
      const int64_t out_base = plane * d.out_area();
      for (int64_t oy = 0; oy < d.oh; ++oy) {
        const Range ry = window(oy, p.stride_h, p.pad_h, p.kernel_h, d.h);
        for (int64_t ox = 0; ox < d.ow; ++ox) {
          const Range rx = window(ox, p.stride_w, p.pad_w, p.kernel_w, d.w);
          // The shape rule keeps padding <= kernel/2, so no window is all padding.
          T best = -std::numeric_limits<T>::infinity();
          int64_t best_at = ry.begin * d.w + rx.begin;
          for (int64_t iy = ry.begin; iy < ry.end; ++iy) {
            for (int64_t ix = rx.begin; ix < rx.end; ++ix) {
              const T v = src[iy * d.w + ix];
              if (v > best || std::isnan(v)) {
                best = v;
                best_at = iy * d.w + ix;
              }
            }
          }
          out[out_base + oy * d.ow + ox] = best;
          at[out_base + oy * d.ow + ox] = best_at;
        }
      }
    });
  });
}

void max_pool2d_backward(const Tensor& g, const Tensor& idx, const Tensor& grad_input) {
  check_contiguous("max_pool2d_backward", {g, idx, grad_input});
  const PlaneDims d = plane_dims(grad_input.shape(), g.shape());
  visit_floating(g.dtype(), "max_pool2d_backward", [&]<typename T>() {
    const T* src = static_cast<const T*>(g.data_ptr());
    const int64_t* at = static_cast<const int64_t*>(idx.data_ptr());
    T* dst = static_cast<T*>(grad_input.data_ptr());
    for_each_plane(d.planes, d.out_area(), [&](int64_t plane) {
      T* plane_grad = dst + plane * d.in_area();
      std::fill(plane_grad, plane_grad + d.in_area(), T(0));
      for (int64_t o = plane * d.out_area(); o < (plane + 1) * d.out_area(); ++o) {
        plane_grad[at[o]] += src[o];
      }
    });
  });
}

void avg_pool2d(const Tensor& x, const Pool2dParams& p, const Tensor& out) {
  check_contiguous("avg_pool2d", {x, out});
  visit_floating(x.dtype(), "avg_pool2d", [&]<typename T>() {
    avg_windows<T, false>(static_cast<const T*>(x.data_ptr()), static_cast<T*>(out.data_ptr()),
                          plane_dims(x.shape(), out.shape()), p);
  });
}

void avg_pool2d_backward(const Tensor& g, const Pool2dParams& p, const Tensor& grad_input) {
  check_contiguous("avg_pool2d_backward", {g, grad_input});
  visit_floating(g.dtype(), "avg_pool2d_backward", [&]<typename T>() {
    avg_windows<T, true>(static_cast<const T*>(g.data_ptr()),
                         static_cast<T*>(grad_input.data_ptr()),
                         plane_dims(grad_input.shape(), g.shape()), p);
  });
}

void adaptive_avg_pool2d(const Tensor& x, const Tensor& out) {
  check_contiguous("adaptive_avg_pool2d", {x, out});
  visit_floating(x.dtype(), "adaptive_avg_pool2d", [&]<typename T>() {
    adaptive_bins<T, false>(static_cast<const T*>(x.data_ptr()), static_cast<T*>(out.data_ptr()),
                            plane_dims(x.shape(), out.shape()));
  });
}

void adaptive_avg_pool2d_backward(const Tensor& g, const Tensor& grad_input) {
  check_contiguous("adaptive_avg_pool2d_backward", {g, grad_input});
  visit_floating(g.dtype(), "adaptive_avg_pool2d_backward", [&]<typename T>() {
    adaptive_bins<T, true>(static_cast<const T*>(g.data_ptr()),
                           static_cast<T*>(grad_input.data_ptr()),
                           plane_dims(grad_input.shape(), g.shape()));
  });
}

}  // namespace

const PoolKernels pool_kernels{max_pool2d,          max_pool2d_backward,
                               avg_pool2d,          avg_pool2d_backward,
                               adaptive_avg_pool2d, adaptive_avg_pool2d_backward};

}  // namespace remat::kernels::cpu
