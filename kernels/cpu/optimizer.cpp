// Optimizer kernels on the CPU (contract: kernels/optimizer.h): elementwise
// work has no cross-element dependence, and the norm sums fixed-size chunks
// in a fixed order.
#include "kernels/optimizer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "kernels/contiguous.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

// T is the storage type; the update runs in C: float for float32 and the
// 16-bit types (rounded once on store, as PyTorch's fused Adam does), double
// for float64.
template <typename T>
void adam_typed(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamStep& s) {
  using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
  // Scalars are computed in float64 and rounded once, as PyTorch's Python
  // floats are when they meet a float32 tensor.
  const double bias_correction1 = 1 - std::pow(s.beta1, static_cast<double>(s.step));
  const double bias_correction2 = 1 - std::pow(s.beta2, static_cast<double>(s.step));
  const C step_size = static_cast<C>(s.lr / bias_correction1);
  const C bias_correction2_sqrt = static_cast<C>(std::sqrt(bias_correction2));
  const C beta1 = static_cast<C>(s.beta1), one_minus_beta1 = static_cast<C>(1 - s.beta1);
  const C beta2 = static_cast<C>(s.beta2), one_minus_beta2 = static_cast<C>(1 - s.beta2);
  const C eps = static_cast<C>(s.eps);
  const C l2 = static_cast<C>(s.decoupled_weight_decay ? 0 : s.weight_decay);
  const C decay = static_cast<C>(s.decoupled_weight_decay ? 1 - s.lr * s.weight_decay : 1);

  auto update = [=](T& param_ref, T grad_value, T& m_ref, T& v_ref) {
    C p = static_cast<C>(param_ref), g = static_cast<C>(grad_value);
    C m = static_cast<C>(m_ref), v = static_cast<C>(v_ref);
    if (l2 != 0) g += l2 * p;
    if (decay != 1) p *= decay;
    m = beta1 * m + one_minus_beta1 * g;
    v = beta2 * v + one_minus_beta2 * g * g;
    p -= step_size * m / (std::sqrt(v) / bias_correction2_sqrt + eps);
    param_ref = static_cast<T>(p);
    m_ref = static_cast<T>(m);
    v_ref = static_cast<T>(v);
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
  parallel_for(chunks, chunks > 1, [&](int64_t c) {
    partial[static_cast<size_t>(c)] =
        chunk(c * kParallelGrain, std::min(n, (c + 1) * kParallelGrain));
  });
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

void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                 const Tensor& exp_avg_sq, const AdamStep& step) {
  visit_all_floating(param.dtype(), "adam_update",
                     [&]<typename T>() { adam_typed<T>(param, grad, exp_avg, exp_avg_sq, step); });
}

double vector_norm(const Tensor& values, double p) {
  REMAT_CHECK(is_floating(values.dtype()), "vector_norm: expected a floating-point tensor, got {}",
              TensorMeta::of(values).str());
  REMAT_CHECK(p > 0, "vector_norm: the order p must be positive or infinity, got {}", p);
  check_contiguous("vector_norm", {values});
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

}  // namespace

const OptimizerKernels optimizer_kernels{adam_update, vector_norm};

}  // namespace remat::kernels::cpu
