// Optimizer kernels on the GPU (contract: kernels/optimizer.h).
#include <cmath>

#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/optimizer.h"

namespace remat::kernels::cuda {
namespace {

// ---- Adam ---------------------------------------------------------------------

// Rounded products and sums that the compiler may not fuse into an FMA: the
// CPU build does not contract a * b + c, so neither may the GPU.
__device__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// The step's scalars, computed on the host as the CPU kernel computes them.
template <typename T>
struct AdamScalars {
  T step_size, bias_correction2_sqrt, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, l2,
      decay;
};

// T is the device storage type; the update runs in acc_t<T> (float for the
// 16-bit types) and is rounded once on store.
template <typename T, bool Contiguous>
__global__ void adam_kernel(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n,
                            StridedIndexer<4> ix, AdamScalars<acc_t<T>> s) {
  REMAT_GRID_STRIDE_LOOP(i, n) {
    int64_t off[4] = {i, i, i, i};
    if constexpr (!Contiguous) ix.offsets(i, off);
    acc_t<T> p = to_acc(param[off[0]]), g = to_acc(grad[off[1]]), m = to_acc(exp_avg[off[2]]),
             v = to_acc(exp_avg_sq[off[3]]);
    if (s.l2 != 0) g = add_rn(g, mul_rn(s.l2, p));
    if (s.decay != 1) p = mul_rn(p, s.decay);
    m = add_rn(mul_rn(s.beta1, m), mul_rn(s.one_minus_beta1, g));
    v = add_rn(mul_rn(s.beta2, v), mul_rn(mul_rn(s.one_minus_beta2, g), g));
    p -= mul_rn(s.step_size, m) / (sqrt(v) / s.bias_correction2_sqrt + s.eps);
    param[off[0]] = from_acc<T>(p);
    exp_avg[off[2]] = from_acc<T>(m);
    exp_avg_sq[off[3]] = from_acc<T>(v);
  }
}

template <typename D>
void adam_typed(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamStep& st) {
  using C = acc_t<D>;
  // Scalars in float64, rounded once, as PyTorch's Python floats are.
  const double bias_correction1 = 1 - std::pow(st.beta1, static_cast<double>(st.step));
  const double bias_correction2 = 1 - std::pow(st.beta2, static_cast<double>(st.step));
  const AdamScalars<C> s{
      .step_size = static_cast<C>(st.lr / bias_correction1),
      .bias_correction2_sqrt = static_cast<C>(std::sqrt(bias_correction2)),
      .beta1 = static_cast<C>(st.beta1),
      .one_minus_beta1 = static_cast<C>(1 - st.beta1),
      .beta2 = static_cast<C>(st.beta2),
      .one_minus_beta2 = static_cast<C>(1 - st.beta2),
      .eps = static_cast<C>(st.eps),
      .l2 = static_cast<C>(st.decoupled_weight_decay ? 0 : st.weight_decay),
      .decay = static_cast<C>(st.decoupled_weight_decay ? 1 - st.lr * st.weight_decay : 1)};
  const int64_t n = param.numel();
  if (n == 0) return;
  auto* p = static_cast<D*>(param.data_ptr());
  const auto* g = static_cast<const D*>(grad.data_ptr());
  auto* m = static_cast<D*>(exp_avg.data_ptr());
  auto* v = static_cast<D*>(exp_avg_sq.data_ptr());
  const cudaStream_t stream = stream_of(param);
  if (param.is_contiguous() && grad.is_contiguous() && exp_avg.is_contiguous() &&
      exp_avg_sq.is_contiguous()) {
    adam_kernel<D, true><<<blocks_for(n), kThreads, 0, stream>>>(p, g, m, v, n, {}, s);
  } else {
    const StridedIndexer<4> ix = make_indexer<4>(
        param.shape(), {param.strides(), grad.strides(), exp_avg.strides(), exp_avg_sq.strides()});
    adam_kernel<D, false><<<blocks_for(n), kThreads, 0, stream>>>(p, g, m, v, n, ix, s);
  }
  REMAT_CUDA_LAUNCH_CHECK("adam_kernel");
}

// ---- SGD ----------------------------------------------------------------------

template <typename T>
struct SgdScalars {
  T lr, weight_decay, momentum, keep;  // keep = 1 - dampening
  bool has_buffer, first, nesterov;
};

template <typename T, bool Contiguous>
__global__ void sgd_kernel(T* param, const T* grad, T* buffer, int64_t n, StridedIndexer<3> ix,
                           SgdScalars<acc_t<T>> s) {
  REMAT_GRID_STRIDE_LOOP(i, n) {
    int64_t off[3] = {i, i, i};
    if constexpr (!Contiguous) ix.offsets(i, off);
    acc_t<T> p = to_acc(param[off[0]]), d = to_acc(grad[off[1]]);
    if (s.weight_decay != 0) d = add_rn(d, mul_rn(s.weight_decay, p));
    if (s.has_buffer) {
      const acc_t<T> b =
          s.first ? d : add_rn(mul_rn(s.momentum, to_acc(buffer[off[2]])), mul_rn(s.keep, d));
      buffer[off[2]] = from_acc<T>(b);
      d = s.nesterov ? add_rn(d, mul_rn(s.momentum, b)) : b;
    }
    param[off[0]] = from_acc<T>(add_rn(p, -mul_rn(s.lr, d)));
  }
}

template <typename D>
void sgd_typed(const Tensor& param, const Tensor& grad, const Tensor& buffer, const SgdStep& st) {
  using C = acc_t<D>;
  const SgdScalars<C> s{.lr = static_cast<C>(st.lr),
                        .weight_decay = static_cast<C>(st.weight_decay),
                        .momentum = static_cast<C>(st.momentum),
                        .keep = static_cast<C>(1 - st.dampening),
                        .has_buffer = st.momentum != 0,
                        .first = st.first_step,
                        .nesterov = st.nesterov};
  const int64_t n = param.numel();
  if (n == 0) return;
  // Without momentum the kernel never touches the buffer; the parameter
  // stands in for its strides.
  const Tensor& b_tensor = s.has_buffer ? buffer : param;
  auto* p = static_cast<D*>(param.data_ptr());
  const auto* g = static_cast<const D*>(grad.data_ptr());
  auto* b = static_cast<D*>(b_tensor.data_ptr());
  const cudaStream_t stream = stream_of(param);
  if (param.is_contiguous() && grad.is_contiguous() && b_tensor.is_contiguous()) {
    sgd_kernel<D, true><<<blocks_for(n), kThreads, 0, stream>>>(p, g, b, n, {}, s);
  } else {
    const StridedIndexer<3> ix =
        make_indexer<3>(param.shape(), {param.strides(), grad.strides(), b_tensor.strides()});
    sgd_kernel<D, false><<<blocks_for(n), kThreads, 0, stream>>>(p, g, b, n, ix, s);
  }
  REMAT_CUDA_LAUNCH_CHECK("sgd_kernel");
}

// ---- vector norm --------------------------------------------------------------

enum class NormKind { Max, Square, Power };  // p = inf, p = 2, other p

// max that keeps a NaN from either side, as the CPU kernel's does.
__device__ double nan_max(double a, double b) { return isnan(a) || a > b ? a : b; }

template <NormKind K>
__device__ double combine(double a, double b) {
  if constexpr (K == NormKind::Max) {
    return nan_max(a, b);
  } else {
    return a + b;
  }
}

template <NormKind K>
__device__ double term(double v, double p) {
  if constexpr (K == NormKind::Max) {
    return fabs(v);
  } else if constexpr (K == NormKind::Square) {
    return v * v;
  } else {
    return pow(fabs(v), p);
  }
}

// Combines v over the block (of kThreads threads). 0 is the identity of both
// combinations (terms are >= 0).
template <NormKind K>
__device__ double block_reduce(double v) {
  return group_reduce(
      v, [](double a, double b) { return combine<K>(a, b); }, 0.0);
}

// Stage 1: each block folds its grid-stride share of x into partials[block].
template <typename D, NormKind K>
__global__ void norm_partials_kernel(const D* x, int64_t n, double p, double* partials) {
  double acc = 0;
  REMAT_GRID_STRIDE_LOOP(i, n) {
    acc = combine<K>(acc, term<K>(static_cast<double>(to_acc(x[i])), p));
  }
  acc = block_reduce<K>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Stage 2: one block folds the partials into out[0].
template <NormKind K>
__global__ void norm_total_kernel(const double* partials, int64_t count, double* out) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc = combine<K>(acc, partials[i]);
  acc = block_reduce<K>(acc);
  if (threadIdx.x == 0) out[0] = acc;
}

// The sum (or max) of term(x[i]) over x (contiguous, n > 0), in a fixed order:
// the grid size depends only on n.
template <NormKind K>
double fold(const Tensor& x, double p) {
  const int64_t n = x.numel();
  const unsigned blocks = std::min(blocks_for(n), 1024u);
  const memory::Allocation scratch = workspace(x, (blocks + 1) * sizeof(double));
  auto* partials = static_cast<double*>(scratch.get());
  double* total = partials + blocks;
  const cudaStream_t stream = stream_of(x);
  visit_floating(x.dtype(), "vector_norm", [&]<typename D>() {
    norm_partials_kernel<D, K>
        <<<blocks, kThreads, 0, stream>>>(static_cast<const D*>(x.data_ptr()), n, p, partials);
  });
  REMAT_CUDA_LAUNCH_CHECK("norm_partials_kernel");
  norm_total_kernel<K><<<1, kThreads, 0, stream>>>(partials, blocks, total);
  REMAT_CUDA_LAUNCH_CHECK("norm_total_kernel");
  double result = 0;
  REMAT_CUDA_CHECK(cudaMemcpyAsync(&result, total, sizeof(double), cudaMemcpyDeviceToHost, stream));
  REMAT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return result;
}

void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                 const Tensor& exp_avg_sq, const AdamStep& step) {
  DeviceScope scope(param);
  visit_floating(param.dtype(), "adam_update",
                 [&]<typename D>() { adam_typed<D>(param, grad, exp_avg, exp_avg_sq, step); });
}

void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer,
                const SgdStep& step) {
  DeviceScope scope(param);
  visit_floating(param.dtype(), "sgd_update",
                 [&]<typename D>() { sgd_typed<D>(param, grad, momentum_buffer, step); });
}

double vector_norm(const Tensor& values, double p) {
  REMAT_CHECK(is_floating(values.dtype()), "vector_norm: expected a floating-point tensor, got {}",
              TensorMeta::of(values).str());
  REMAT_CHECK(p > 0, "vector_norm: the order p must be positive or infinity, got {}", p);
  check_contiguous("vector_norm", {values});
  if (values.numel() == 0) return 0;
  DeviceScope scope(values);
  if (std::isinf(p)) return fold<NormKind::Max>(values, p);
  if (p == 2) return std::sqrt(fold<NormKind::Square>(values, p));
  return std::pow(fold<NormKind::Power>(values, p), 1 / p);
}

}  // namespace

const OptimizerKernels optimizer_kernels{adam_update, sgd_update, vector_norm};

}  // namespace remat::kernels::cuda
