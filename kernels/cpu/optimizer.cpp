// Optimizer kernels on the CPU (contract: kernels/optimizer.h): elementwise
// work has no cross-element dependence, and the norm sums fixed-size chunks
// in a fixed order.
#include "kernels/optimizer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/contiguous.h"
#include "kernels/cpu/clones.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec_math.h"

namespace remat::kernels::cpu {
namespace {

// ---- the updates, one element at a time ---------------------------------------
// C is the type the update runs in: float for float32 and the 16-bit types
// (rounded once on store, as PyTorch's fused Adam does), double for float64.
template <typename T>
using update_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// The step's scalars, computed in float64 and rounded once, as PyTorch's
// Python floats are when they meet a float32 tensor.
template <typename C>
struct AdamScalars {
  C step_size, bias_correction2_sqrt, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, l2,
      decay;
  explicit AdamScalars(const AdamStep& s) {
    const double bias_correction1 = 1 - std::pow(s.beta1, static_cast<double>(s.step));
    const double bias_correction2 = 1 - std::pow(s.beta2, static_cast<double>(s.step));
    step_size = static_cast<C>(s.lr / bias_correction1);
    bias_correction2_sqrt = static_cast<C>(std::sqrt(bias_correction2));
    beta1 = static_cast<C>(s.beta1);
    one_minus_beta1 = static_cast<C>(1 - s.beta1);
    beta2 = static_cast<C>(s.beta2);
    one_minus_beta2 = static_cast<C>(1 - s.beta2);
    eps = static_cast<C>(s.eps);
    l2 = static_cast<C>(s.decoupled_weight_decay ? 0 : s.weight_decay);
    decay = static_cast<C>(s.decoupled_weight_decay ? 1 - s.lr * s.weight_decay : 1);
  }
};

template <typename T, typename C>
[[gnu::always_inline]] inline void adam_element(T& param_ref, T grad_value, T& m_ref, T& v_ref,
                                                const AdamScalars<C>& s) {
  C p = static_cast<C>(param_ref), g = static_cast<C>(grad_value);
  C m = static_cast<C>(m_ref), v = static_cast<C>(v_ref);
  if (s.l2 != 0) g += s.l2 * p;
  if (s.decay != 1) p *= s.decay;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  p -= s.step_size * m / (std::sqrt(v) / s.bias_correction2_sqrt + s.eps);
  param_ref = static_cast<T>(p);
  m_ref = static_cast<T>(m);
  v_ref = static_cast<T>(v);
}

template <typename C>
struct SgdScalars {
  C lr, weight_decay, momentum, keep;  // keep = 1 - dampening
  bool first, nesterov;
  explicit SgdScalars(const SgdStep& s)
      : lr(static_cast<C>(s.lr)),
        weight_decay(static_cast<C>(s.weight_decay)),
        momentum(static_cast<C>(s.momentum)),
        keep(static_cast<C>(1 - s.dampening)),
        first(s.first_step),
        nesterov(s.nesterov) {}
};

// The buffer's store is unconditional within a loop (a store under a runtime
// branch keeps GCC from vectorising), so whether there is one is a template
// argument.
template <bool kBuffer, typename T, typename C>
[[gnu::always_inline]] inline void sgd_element(T& param_ref, T grad_value, T& b_ref,
                                               const SgdScalars<C>& s) {
  C p = static_cast<C>(param_ref), d = static_cast<C>(grad_value);
  if (s.weight_decay != 0) d += s.weight_decay * p;
  if constexpr (kBuffer) {
    const C b = s.first ? d : s.momentum * static_cast<C>(b_ref) + s.keep * d;
    b_ref = static_cast<T>(b);
    d = s.nesterov ? d + s.momentum * b : b;
  }
  param_ref = static_cast<T>(p - s.lr * d);
}

// Contiguous rows, cloned per ISA: baseline SSE2 leaves the Adam update's
// sqrt and division compute-bound (measured: 0.73 of PyTorch's fused AdamW
// at SSE2 width), and 16-bit rows' conversions scalar.
template <typename T>
REMAT_CPU_CLONES void adam_rows(T* p, const T* g, T* m, T* v, int64_t n,
                                const AdamScalars<update_t<T>>& s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) adam_element(p[i], g[i], m[i], v[i], s);
}

template <typename T>
REMAT_CPU_CLONES void sgd_rows(T* p, const T* g, T* b, int64_t n,
                               const SgdScalars<update_t<T>>& s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) sgd_element<true>(p[i], g[i], b[i], s);
}

template <typename T>
REMAT_CPU_CLONES void sgd_rows_no_buffer(T* p, const T* g, int64_t n,
                                         const SgdScalars<update_t<T>>& s) {
  T unused{};
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) sgd_element<false>(p[i], g[i], unused, s);
}

// Runs element(refs...) over N operands of one shape, any strides; rows that
// are contiguous in every operand go to `dense_rows` instead.
template <typename T, size_t N, typename Element, typename DenseRows>
void update_all(const std::array<const Tensor*, N>& operands, Element&& element,
                DenseRows&& dense_rows) {
  std::array<T*, N> base;
  std::array<Strides, N> strides;
  for (size_t k = 0; k < N; ++k) {
    base[k] = static_cast<T*>(operands[k]->data_ptr());
    strides[k] = operands[k]->strides();
  }
  for_each_row<N>(
      operands[0]->shape(), strides,
      [&](const std::array<int64_t, N>& off, int64_t len, const std::array<int64_t, N>& st) {
        std::array<T*, N> row;
        for (size_t k = 0; k < N; ++k) row[k] = base[k] + off[k];
        const bool dense = std::all_of(st.begin(), st.end(), [](int64_t s) { return s == 1; });
        if (dense) return std::apply([&](auto*... r) { dense_rows(r..., len); }, row);
        for (int64_t i = 0; i < len; ++i) {
          [&]<size_t... K>(std::index_sequence<K...>) { element(row[K][i * st[K]]...); }
          (std::make_index_sequence<N>{});
        }
      });
}

template <typename T>
void adam_typed(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamStep& step) {
  const AdamScalars<update_t<T>> s(step);
  update_all<T, 4>(
      {&param, &grad, &exp_avg, &exp_avg_sq},
      [&](T& p, T& g, T& m, T& v) { adam_element(p, g, m, v, s); },
      [&](T* p, T* g, T* m, T* v, int64_t n) { adam_rows(p, g, m, v, n, s); });
}

template <typename T>
void sgd_typed(const Tensor& param, const Tensor& grad, const Tensor& buffer, const SgdStep& step) {
  const SgdScalars<update_t<T>> s(step);
  if (step.momentum == 0) {
    update_all<T, 2>(
        {&param, &grad},
        [&](T& p, T& g) {
          T unused{};
          sgd_element<false>(p, g, unused, s);
        },
        [&](T* p, T* g, int64_t n) { sgd_rows_no_buffer(p, g, n, s); });
  } else {
    update_all<T, 3>(
        {&param, &grad, &buffer}, [&](T& p, T& g, T& b) { sgd_element<true>(p, g, b, s); },
        [&](T* p, T* g, T* b, int64_t n) { sgd_rows(p, g, b, n, s); });
  }
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

void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer,
                const SgdStep& step) {
  visit_all_floating(param.dtype(), "sgd_update",
                     [&]<typename T>() { sgd_typed<T>(param, grad, momentum_buffer, step); });
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

const OptimizerKernels optimizer_kernels{adam_update, sgd_update, vector_norm};

}  // namespace remat::kernels::cpu
