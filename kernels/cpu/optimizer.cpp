#include "kernels/cpu/optimizer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

template <typename T>
void adam_typed(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamStep& s) {
  // Scalars are computed in float64 and rounded once, as PyTorch's Python
  // floats are when they meet a float32 tensor.
  const double bias_correction1 = 1 - std::pow(s.beta1, static_cast<double>(s.step));
  const double bias_correction2 = 1 - std::pow(s.beta2, static_cast<double>(s.step));
  const T step_size = static_cast<T>(s.lr / bias_correction1);
  const T bias_correction2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
  const T beta1 = static_cast<T>(s.beta1), one_minus_beta1 = static_cast<T>(1 - s.beta1);
  const T beta2 = static_cast<T>(s.beta2), one_minus_beta2 = static_cast<T>(1 - s.beta2);
  const T eps = static_cast<T>(s.eps);
  const T l2 = static_cast<T>(s.decoupled_weight_decay ? 0 : s.weight_decay);
  const T decay = static_cast<T>(s.decoupled_weight_decay ? 1 - s.lr * s.weight_decay : 1);

  auto update = [=](T& p, T g, T& m, T& v) {
    if (l2 != 0) g += l2 * p;
    if (decay != 1) p *= decay;
    m = beta1 * m + one_minus_beta1 * g;
    v = beta2 * v + one_minus_beta2 * g * g;
    p -= step_size * m / (std::sqrt(v) / bias_correction2_sqrt + eps);
  };

  T* const p_base = static_cast<T*>(param.data_ptr());
  const T* const g_base = static_cast<const T*>(grad.data_ptr());
  T* const m_base = static_cast<T*>(exp_avg.data_ptr());
  T* const v_base = static_cast<T*>(exp_avg_sq.data_ptr());
  for_each_row<4>(
      param.shape(),
      std::array<Strides, 4>{param.strides(), grad.strides(), exp_avg.strides(),
                             exp_avg_sq.strides()},
      [&](const std::array<int64_t, 4>& off, int64_t len, const std::array<int64_t, 4>& st) {
        T* p = p_base + off[0];
        const T* g = g_base + off[1];
        T* m = m_base + off[2];
        T* v = v_base + off[3];
        if (st == std::array<int64_t, 4>{1, 1, 1, 1}) {
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) update(p[i], g[i], m[i], v[i]);
        } else {
          for (int64_t i = 0; i < len; ++i) {
            update(p[i * st[0]], g[i * st[1]], m[i * st[2]], v[i * st[3]]);
          }
        }
      });
}

// Folds fixed-size chunks of [0, n) in parallel and combines the chunks'
// results in order, so the value does not depend on the thread count.
template <typename ChunkFn, typename Combine>
double fold_chunks(int64_t n, ChunkFn&& chunk, Combine&& combine) {
  const int64_t chunks = (n + kParallelGrain - 1) / kParallelGrain;
  std::vector<double> partial(static_cast<size_t>(chunks));
#pragma omp parallel for if (chunks > 1) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    partial[static_cast<size_t>(c)] =
        chunk(c * kParallelGrain, std::min(n, (c + 1) * kParallelGrain));
  }
  double total = 0;
  for (double value : partial) total = combine(total, value);
  return total;
}

// max that keeps a NaN, as torch's max does (std::max and fmax drop it).
double nan_max(double a, double b) { return std::isnan(a) || a > b ? a : b; }

template <typename T, typename Term>
double sum_of(const T* x, int64_t n, Term term) {
  return fold_chunks(
      n,
      [&](int64_t begin, int64_t end) {
        double sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = begin; i < end; ++i) sum += term(static_cast<double>(x[i]));
        return sum;
      },
      std::plus<>());
}

}  // namespace

void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                 const Tensor& exp_avg_sq, const AdamStep& step) {
  switch (param.dtype()) {
    case kFloat32: adam_typed<float>(param, grad, exp_avg, exp_avg_sq, step); break;
    case kFloat64: adam_typed<double>(param, grad, exp_avg, exp_avg_sq, step); break;
    default: throw Error(fmt::format("adam_update: no CPU kernel for dtype {}", param.dtype()));
  }
}

double vector_norm(const Tensor& x, double p) {
  REMAT_CHECK(is_floating(x.dtype()), "vector_norm: expected a floating-point tensor, got {}",
              TensorMeta::of(x).str());
  REMAT_CHECK(p > 0, "vector_norm: the order p must be positive or infinity, got {}", p);
  const Tensor values = x.contiguous();
  const int64_t n = values.numel();
  return visit_dtype(values.dtype(), [&]<typename T>() {
    const T* data = static_cast<const T*>(values.data_ptr());
    if (std::isinf(p)) {
      return fold_chunks(
          n,
          [&](int64_t begin, int64_t end) {
            double largest = 0;
            for (int64_t i = begin; i < end; ++i) {
              largest = nan_max(std::abs(static_cast<double>(data[i])), largest);
            }
            return largest;
          },
          nan_max);
    }
    if (p == 2) return std::sqrt(sum_of(data, n, [](double v) { return v * v; }));
    return std::pow(sum_of(data, n, [p](double v) { return std::pow(std::abs(v), p); }), 1 / p);
  });
}

}  // namespace remat::kernels::cpu
