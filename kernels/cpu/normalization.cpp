// LayerNorm and BatchNorm on the CPU (contract: kernels/normalization.h),
// float32 and float64; layer_norm also reads and writes bfloat16/float16,
// computing in float (statistics in float64) without float32 copies.
#include "kernels/normalization.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/contiguous.h"
#include "kernels/cpu/clones.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/float_rows.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec_math.h"

namespace remat::kernels::cpu {
namespace {

// Sum and sum of squares of (value - shift) in float64: one pass, and stable
// because the shift (a value of the same data) is close to the mean.
class ShiftedMoments {
 public:
  explicit ShiftedMoments(double shift) : shift_(shift) {}
  template <typename T>
  void add(const T* p, int64_t n) {
    double s = 0, ss = 0;
#pragma omp simd reduction(+ : s, ss)
    for (int64_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(p[i]) - shift_;
      s += d;
      ss += d * d;
    }
    sum_ += s;
    sum_sq_ += ss;
    count_ += n;
  }
  int64_t count() const { return count_; }
  double mean() const { return shift_ + sum_ / static_cast<double>(count_); }
  double biased_var() const {
    const double m = sum_ / static_cast<double>(count_);
    const double var = sum_sq_ / static_cast<double>(count_) - m * m;
    return var < 0 ? 0.0 : var;  // rounding below 0 clamped, a NaN kept (std::max(0, NaN) is 0)
  }

 private:
  double shift_, sum_ = 0, sum_sq_ = 0;
  int64_t count_ = 0;
};

// Columns per task of the weight/bias gradient of layer_norm: each task owns
// its columns and walks every row, so the sums need no cross-thread merge.
constexpr int64_t kColumnChunk = 32;

// One row of y = (x - mean) * rstd * w + b (w, b null for none), the
// statistics in float64, rounded to T.
template <typename T>
[[gnu::always_inline]] inline void layer_norm_row_of(const T* x, const T* w, const T* b, double eps,
                                                     int64_t cols, T* y, T& mean, T& rstd) {
  ShiftedMoments m(static_cast<double>(x[0]));
  m.add(x, cols);
  const T mu = static_cast<T>(m.mean());
  const T rs = static_cast<T>(1.0 / std::sqrt(m.biased_var() + eps));
  mean = mu;
  rstd = rs;
  // One loop per affine case keeps the inner loops free of branches.
  if (w && b) {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = (x[j] - mu) * rs * w[j] + b[j];
  } else if (w) {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = (x[j] - mu) * rs * w[j];
  } else if (b) {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = (x[j] - mu) * rs + b[j];
  } else {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = (x[j] - mu) * rs;
  }
}
REMAT_CPU_CLONES void layer_norm_row(const float* x, const float* w, const float* b, double eps,
                                     int64_t cols, float* y, float& mean, float& rstd) {
  layer_norm_row_of(x, w, b, eps, cols, y, mean, rstd);
}
void layer_norm_row(const double* x, const double* w, const double* b, double eps, int64_t cols,
                    double* y, double& mean, double& rstd) {
  layer_norm_row_of(x, w, b, eps, cols, y, mean, rstd);
}

// T is the storage type of x, w, b and y; the statistics are C =
// compute_t<T> (float32 for the 16-bit types, as the op's shape rule says).
// The 16-bit types go through float rows: the bits of a float32 copy.
template <typename T, typename C = compute_t<T>>
void layer_norm_kernel(const T* x, const T* w, const T* b, double eps, int64_t rows, int64_t cols,
                       T* y, C* mean, C* rstd) {
  std::vector<float> w_wide, b_wide;
  if constexpr (is_reduced_v<T>) {
    if (w) w_wide.assign(w, w + cols);
    if (b) b_wide.assign(b, b + cols);
  }
  parallel_for(rows, rows * cols >= 2 * kParallelGrain, [&](int64_t r) {
    if constexpr (is_reduced_v<T>) {
      const std::span<float> out = scratch_row(1, cols);
      layer_norm_row(load_row(0, x + r * cols, cols).data(), w ? w_wide.data() : nullptr,
                     b ? b_wide.data() : nullptr, eps, cols, out.data(), mean[r], rstd[r]);
      store_row(out, y + r * cols);
    } else {
      layer_norm_row(x + r * cols, w, b, eps, cols, y + r * cols, mean[r], rstd[r]);
    }
  });
}

// One row of dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)), w = 1
// when null, in float64.
template <typename T>
[[gnu::always_inline]] inline void layer_norm_dx_row_of(const T* g, const T* x, const T* w,
                                                        double mu, double rs, int64_t cols, T* dx) {
  double sum_gw = 0, sum_gw_xhat = 0;
#pragma omp simd reduction(+ : sum_gw, sum_gw_xhat)
  for (int64_t j = 0; j < cols; ++j) {
    const double gw = static_cast<double>(g[j]) * (w ? static_cast<double>(w[j]) : 1.0);
    sum_gw += gw;
    sum_gw_xhat += gw * (static_cast<double>(x[j]) - mu) * rs;
  }
  const double mean_gw = sum_gw / static_cast<double>(cols);
  const double mean_gw_xhat = sum_gw_xhat / static_cast<double>(cols);
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) {
    const double gw = static_cast<double>(g[j]) * (w ? static_cast<double>(w[j]) : 1.0);
    const double xhat = (static_cast<double>(x[j]) - mu) * rs;
    dx[j] = static_cast<T>(rs * (gw - mean_gw - xhat * mean_gw_xhat));
  }
}
REMAT_CPU_CLONES void layer_norm_dx_row(const float* g, const float* x, const float* w, double mu,
                                        double rs, int64_t cols, float* dx) {
  layer_norm_dx_row_of(g, x, w, mu, rs, cols, dx);
}
void layer_norm_dx_row(const double* g, const double* x, const double* w, double mu, double rs,
                       int64_t cols, double* dx) {
  layer_norm_dx_row_of(g, x, w, mu, rs, cols, dx);
}

// One row's terms of dweight = sum over rows of g xhat and dbias = sum of g,
// added to float64 sums column by column (so in row order for every column).
template <typename T>
[[gnu::always_inline]] inline void layer_norm_param_grads_row_of(const T* g, const T* x, double mu,
                                                                 double rs, int64_t len,
                                                                 double* sum_g,
                                                                 double* sum_g_xhat) {
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) {
    const double gj = static_cast<double>(g[j]);
    sum_g[j] += gj;
    sum_g_xhat[j] += gj * (static_cast<double>(x[j]) - mu) * rs;
  }
}
REMAT_CPU_CLONES void layer_norm_param_grads_row(const float* g, const float* x, double mu,
                                                 double rs, int64_t len, double* sum_g,
                                                 double* sum_g_xhat) {
  layer_norm_param_grads_row_of(g, x, mu, rs, len, sum_g, sum_g_xhat);
}
void layer_norm_param_grads_row(const double* g, const double* x, double mu, double rs, int64_t len,
                                double* sum_g, double* sum_g_xhat) {
  layer_norm_param_grads_row_of(g, x, mu, rs, len, sum_g, sum_g_xhat);
}

template <typename T, typename C = compute_t<T>>
void layer_norm_backward_kernel(const T* g, const T* x, const T* w, const C* mean, const C* rstd,
                                int64_t rows, int64_t cols, T* dx, T* dw, T* db) {
  const bool parallel = rows * cols >= 2 * kParallelGrain;
  using Row = std::conditional_t<is_reduced_v<T>, float, T>;  // what the row kernels take
  std::vector<float> w_wide;
  if constexpr (is_reduced_v<T>) {
    if (w) w_wide.assign(w, w + cols);
  }
  if (dx) {
    parallel_for(rows, parallel, [&](int64_t r) {
      const double mu = static_cast<double>(mean[r]), rs = static_cast<double>(rstd[r]);
      if constexpr (is_reduced_v<T>) {  // through float rows: the bits of a float32 copy
        const std::span<float> out = scratch_row(2, cols);
        layer_norm_dx_row(load_row(0, g + r * cols, cols).data(),
                          load_row(1, x + r * cols, cols).data(), w ? w_wide.data() : nullptr, mu,
                          rs, cols, out.data());
        store_row(out, dx + r * cols);
      } else {
        layer_norm_dx_row(g + r * cols, x + r * cols, w, mu, rs, cols, dx + r * cols);
      }
    });
  }
  if (dw || db) {
    const int64_t chunks = (cols + kColumnChunk - 1) / kColumnChunk;
    parallel_for(chunks, parallel && chunks > 1, [&](int64_t c) {
      const int64_t begin = c * kColumnChunk, len = std::min(kColumnChunk, cols - begin);
      std::array<double, kColumnChunk> sum_g_xhat{}, sum_g{};
      std::array<Row, kColumnChunk> g_row, x_row;
      for (int64_t r = 0; r < rows; ++r) {
        const T* gr = g + r * cols + begin;
        const T* xr = x + r * cols + begin;
        const double mu = static_cast<double>(mean[r]), rs = static_cast<double>(rstd[r]);
        if constexpr (is_reduced_v<T>) {
          std::copy(gr, gr + len, g_row.begin());
          std::copy(xr, xr + len, x_row.begin());
          layer_norm_param_grads_row(g_row.data(), x_row.data(), mu, rs, len, sum_g.data(),
                                     sum_g_xhat.data());
        } else {
          layer_norm_param_grads_row(gr, xr, mu, rs, len, sum_g.data(), sum_g_xhat.data());
        }
      }
      for (int64_t j = 0; j < len; ++j) {
        if (dw) dw[begin + j] = static_cast<T>(sum_g_xhat[static_cast<size_t>(j)]);
        if (db) db[begin + j] = static_cast<T>(sum_g[static_cast<size_t>(j)]);
      }
    });
  }
}

// x as [N, C, S] (S: the product of the spatial dims).
struct ChannelLayout {
  int64_t batch, channels, spatial;
  explicit ChannelLayout(const Tensor& x)
      : batch(x.shape()[0]),
        channels(x.shape()[1]),
        spatial(numel_of(Shape(x.shape().begin() + 2, x.shape().end()))) {}
  int64_t count() const { return batch * spatial; }
  int64_t offset(int64_t n, int64_t c) const { return (n * channels + c) * spatial; }
  bool parallel() const { return batch * channels * spatial >= 2 * kParallelGrain; }
};

template <typename T>
void batch_norm_stats_kernel(const T* x, const ChannelLayout& l, double eps, T* mean, T* invstd,
                             T* running_mean, int64_t running_mean_stride, T* running_var,
                             int64_t running_var_stride, double momentum) {
  parallel_for(l.channels, l.parallel() && l.channels > 1, [&](int64_t c) {
    ShiftedMoments m(static_cast<double>(x[l.offset(0, c)]));
    for (int64_t n = 0; n < l.batch; ++n) m.add(x + l.offset(n, c), l.spatial);
    const double var = m.biased_var();
    mean[c] = static_cast<T>(m.mean());
    invstd[c] = static_cast<T>(1.0 / std::sqrt(var + eps));
    if (running_mean) {
      const double n = static_cast<double>(m.count());
      T& rm = running_mean[c * running_mean_stride];
      T& rv = running_var[c * running_var_stride];
      rm = static_cast<T>((1 - momentum) * static_cast<double>(rm) + momentum * m.mean());
      rv = static_cast<T>((1 - momentum) * static_cast<double>(rv) + momentum * var * n / (n - 1));
    }
  });
}

template <typename T>
void batch_norm_apply_kernel(const T* x, const ChannelLayout& l, const T* mean, const T* invstd,
                             const T* w, const T* b, T* y) {
  const int64_t rows = l.batch * l.channels;
  parallel_for(rows, l.parallel(), [&](int64_t r) {
    const int64_t c = r % l.channels;
    const T mu = mean[c], scale = w ? invstd[c] * w[c] : invstd[c], shift = b ? b[c] : T(0);
    const T* xr = x + r * l.spatial;
    T* yr = y + r * l.spatial;
#pragma omp simd
    for (int64_t s = 0; s < l.spatial; ++s) yr[s] = (xr[s] - mu) * scale + shift;
  });
}

// With M = N * S values per channel and xhat = (x - mean) * invstd:
// dbias = sum g, dweight = sum g xhat, and in training
// dx = weight * invstd * (g - dbias / M - xhat * dweight / M), weight = 1 when null.
template <typename T>
void batch_norm_backward_kernel(const T* g, const T* x, const ChannelLayout& l, const T* w,
                                const T* mean, const T* invstd, bool training, T* dx, T* dw,
                                T* db) {
  const bool need_sums = dw || db || (dx && training);
  parallel_for(l.channels, l.parallel() && l.channels > 1, [&](int64_t c) {
    const double mu = static_cast<double>(mean[c]), is = static_cast<double>(invstd[c]);
    double sum_g = 0, sum_g_centered = 0;
    if (need_sums) {
      for (int64_t n = 0; n < l.batch; ++n) {
        const T* gr = g + l.offset(n, c);
        const T* xr = x + l.offset(n, c);
#pragma omp simd reduction(+ : sum_g, sum_g_centered)
        for (int64_t s = 0; s < l.spatial; ++s) {
          const double gs = static_cast<double>(gr[s]);
          sum_g += gs;
          sum_g_centered += gs * (static_cast<double>(xr[s]) - mu);
        }
      }
    }
    if (dw) dw[c] = static_cast<T>(sum_g_centered * is);
    if (db) db[c] = static_cast<T>(sum_g);
    if (!dx) return;
    const double scale = w ? is * static_cast<double>(w[c]) : is;
    const double count = static_cast<double>(l.count());
    // Centred and scaled in training; zero in eval, where the statistics are constants.
    const double mean_g = training ? sum_g / count : 0.0;
    const double centered_coef = training ? is * is * sum_g_centered / count : 0.0;
    for (int64_t n = 0; n < l.batch; ++n) {
      const T* gr = g + l.offset(n, c);
      const T* xr = x + l.offset(n, c);
      T* dxr = dx + l.offset(n, c);
#pragma omp simd
      for (int64_t s = 0; s < l.spatial; ++s) {
        const double centered = static_cast<double>(xr[s]) - mu;
        dxr[s] = static_cast<T>((static_cast<double>(gr[s]) - mean_g - centered * centered_coef) *
                                scale);
      }
    }
  });
}

// The values per row of layer_norm: the product of x's last normalized_ndim dims.
int64_t normalized_numel(const Tensor& x, int64_t normalized_ndim) {
  return numel_of(Shape(x.shape().end() - normalized_ndim, x.shape().end()));
}

void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t normalized_ndim,
                double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  check_contiguous("layer_norm", {x, weight, bias, y, mean, rstd});
  const int64_t cols = normalized_numel(x, normalized_ndim);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  visit_all_floating(x.dtype(), "layer_norm", [&]<typename T>() {
    using C = compute_t<T>;
    layer_norm_kernel<T>(in_ptr<T>(x), in_ptr<T>(weight), in_ptr<T>(bias), eps, rows, cols,
                         out_ptr<T>(y), out_ptr<C>(mean), out_ptr<C>(rstd));
  });
}

void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                         const Tensor& mean, const Tensor& rstd, int64_t normalized_ndim,
                         const Tensor& dx, const Tensor& dweight, const Tensor& dbias) {
  check_contiguous("layer_norm_backward", {grad, x, weight, mean, rstd, dx, dweight, dbias});
  const int64_t cols = normalized_numel(x, normalized_ndim);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  visit_all_floating(x.dtype(), "layer_norm_backward", [&]<typename T>() {
    using C = compute_t<T>;
    layer_norm_backward_kernel<T>(in_ptr<T>(grad), in_ptr<T>(x), in_ptr<T>(weight), in_ptr<C>(mean),
                                  in_ptr<C>(rstd), rows, cols, out_ptr<T>(dx), out_ptr<T>(dweight),
                                  out_ptr<T>(dbias));
  });
}

void batch_norm_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& invstd,
                      const Tensor& running_mean, const Tensor& running_var, double momentum) {
  check_contiguous("batch_norm", {x, mean, invstd});
  const ChannelLayout l(x);
  REMAT_CHECK(l.count() > 0, "batch_norm: no values per channel in {}", TensorMeta::of(x).str());
  // Written through their strides: the update must land in the caller's tensors.
  const int64_t rm_stride = running_mean.defined() ? running_mean.strides()[0] : 0;
  const int64_t rv_stride = running_var.defined() ? running_var.strides()[0] : 0;
  visit_floating(x.dtype(), "batch_norm", [&]<typename T>() {
    batch_norm_stats_kernel<T>(in_ptr<T>(x), l, eps, out_ptr<T>(mean), out_ptr<T>(invstd),
                               out_ptr<T>(running_mean), rm_stride, out_ptr<T>(running_var),
                               rv_stride, momentum);
  });
}

void batch_norm_running_stats(const Tensor& running_mean, const Tensor& running_var, double eps,
                              const Tensor& mean, const Tensor& invstd) {
  check_contiguous("batch_norm", {mean, invstd});
  const int64_t rm_stride = running_mean.strides()[0], rv_stride = running_var.strides()[0];
  visit_floating(mean.dtype(), "batch_norm", [&]<typename T>() {
    const T* prm = in_ptr<T>(running_mean);
    const T* prv = in_ptr<T>(running_var);
    T* pm = out_ptr<T>(mean);
    T* pi = out_ptr<T>(invstd);
    for (int64_t c = 0; c < mean.numel(); ++c) {
      pm[c] = prm[c * rm_stride];
      pi[c] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(prv[c * rv_stride]) + eps));
    }
  });
}

void batch_norm_apply(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                      const Tensor& weight, const Tensor& bias, const Tensor& y) {
  check_contiguous("batch_norm", {x, mean, invstd, weight, bias, y});
  const ChannelLayout l(x);
  visit_floating(x.dtype(), "batch_norm", [&]<typename T>() {
    batch_norm_apply_kernel<T>(in_ptr<T>(x), l, in_ptr<T>(mean), in_ptr<T>(invstd),
                               in_ptr<T>(weight), in_ptr<T>(bias), out_ptr<T>(y));
  });
}

void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                         const Tensor& mean, const Tensor& invstd, bool training, const Tensor& dx,
                         const Tensor& dweight, const Tensor& dbias) {
  check_contiguous("batch_norm_backward", {grad, x, weight, mean, invstd, dx, dweight, dbias});
  const ChannelLayout l(x);
  visit_floating(x.dtype(), "batch_norm_backward", [&]<typename T>() {
    batch_norm_backward_kernel<T>(in_ptr<T>(grad), in_ptr<T>(x), l, in_ptr<T>(weight),
                                  in_ptr<T>(mean), in_ptr<T>(invstd), training, out_ptr<T>(dx),
                                  out_ptr<T>(dweight), out_ptr<T>(dbias));
  });
}

}  // namespace

const NormalizationKernels normalization_kernels{layer_norm,       layer_norm_backward,
                                                 batch_norm_stats, batch_norm_running_stats,
                                                 batch_norm_apply, batch_norm_backward};

}  // namespace remat::kernels::cpu
