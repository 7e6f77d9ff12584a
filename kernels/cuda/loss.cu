// Cross-entropy on the GPU (contract: kernels/loss.h).
#include <cmath>

#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/index_scan.cuh"
#include "kernels/loss.h"

namespace remat::kernels::cuda {
namespace {

// L lanes per row: 32 (a warp) when a row's classes are adjacent in memory
// (S = 1), so the warp reads them coalesced; 1 otherwise, where adjacent rows
// are adjacent in memory and neighbouring threads read them coalesced. Two
// passes (max, then sum of exp) as on the CPU.
template <typename D, int L>
__global__ void cross_entropy_kernel(const D* x, const int64_t* t, int64_t rows, int64_t classes,
                                     int64_t inner, int64_t ignore_index, D* lse,
                                     acc_t<D>* row_loss) {
  using A = acc_t<D>;
  const int lane = static_cast<int>(threadIdx.x % L);
  const int64_t first = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / L;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x / L;
  // All lanes of a group share r, so each group runs the loop (and its
  // shuffles) together.
  for (int64_t r = first; r < rows; r += stride) {
    const D* p = x + (r / inner) * classes * inner + r % inner;
    A m = -INFINITY;
    for (int64_t c = lane; c < classes; c += L) m = fmax(m, to_acc(p[c * inner]));
    m = warp_reduce<L>(m, [](A a, A b) { return fmax(a, b); });
    if (isinf(m) && m < 0) m = 0;  // every logit -inf: keep exp finite
    A total = 0;
    for (int64_t c = lane; c < classes; c += L) total += exp(to_acc(p[c * inner]) - m);
    total = warp_reduce<L>(total, [](A a, A b) { return a + b; });
    if (lane == 0) {
      const A row_lse = m + log(total);
      lse[r] = from_acc<D>(row_lse);
      row_loss[r] = t[r] == ignore_index ? A(0) : row_lse - to_acc(p[t[r] * inner]);
    }
  }
}

// One block sums the row losses in float64 in a fixed order (no atomics) and
// writes the mean over `count` rows: 0/0 = NaN when every row is ignored.
template <typename D>
__global__ void mean_loss_kernel(const acc_t<D>* row_loss, int64_t rows, double count, D* loss) {
  __shared__ double warp_sums[kThreads / 32];
  double sum = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) sum += row_loss[r];
  const auto add = [](double a, double b) { return a + b; };
  sum = warp_reduce<32>(sum, add);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0;
    sum = warp_reduce<32>(sum, add);
    if (threadIdx.x == 0) loss[0] = from_acc<D>(sum / count);
  }
}

// Element e of out [N, C, S]: row n * S + s, class c.
template <typename D>
__global__ void cross_entropy_backward_kernel(const D* grad, const D* x, const int64_t* t,
                                              const D* lse, int64_t total, int64_t classes,
                                              int64_t inner, int64_t ignore_index, acc_t<D> count,
                                              D* out) {
  using A = acc_t<D>;
  const A scale = to_acc(grad[0]) / count;
  REMAT_GRID_STRIDE_LOOP(e, total) {
    const int64_t s = e % inner, c = (e / inner) % classes, n = e / (inner * classes);
    const int64_t r = n * inner + s;
    if (t[r] == ignore_index) {
      out[e] = from_acc<D>(A(0));
    } else {
      const A prob = exp(to_acc(x[e]) - to_acc(lse[r]));
      out[e] = from_acc<D>((prob - (c == t[r] ? A(1) : A(0))) * scale);
    }
  }
}

struct RowLayout {
  int64_t batch, classes, inner;  // N, C, S
  int64_t rows() const { return batch * inner; }
};

RowLayout layout_of(const Tensor& logits) {
  int64_t inner = 1;
  for (size_t d = 2; d < logits.shape().size(); ++d) inner *= logits.shape()[d];
  return {logits.shape()[0], logits.shape()[1], inner};
}

// The rows that take part; throws on a target outside [0, C).
int64_t count_targets(const Tensor& targets, int64_t classes, int64_t ignore_index) {
  const IndexScan scan = scan_indices(targets, classes, ignore_index);
  REMAT_CHECK(!scan.bad_position,
              "cross_entropy: target {} (at position {}) is out of range for {} classes "
              "(ignore_index is {})",
              scan.bad_value, scan.bad_position.value_or(0), classes, ignore_index);
  return scan.counted;
}

void cross_entropy(const Tensor& x, const Tensor& t, int64_t ignore_index, const Tensor& loss,
                   const Tensor& lse) {
  check_contiguous("cross_entropy", {x, t, loss, lse});
  const RowLayout l = layout_of(x);
  const int64_t rows = l.rows();
  const int64_t count = count_targets(t, l.classes, ignore_index);
  DeviceScope scope(loss);
  const cudaStream_t stream = stream_of(loss);
  visit_floating(x.dtype(), "cross_entropy", [&]<typename D>() {
    using A = acc_t<D>;
    const memory::Allocation row_loss =
        workspace(loss, static_cast<size_t>(std::max<int64_t>(rows, 1)) * sizeof(A));
    auto* row_loss_ptr = static_cast<A*>(row_loss.get());
    if (rows > 0) {
      const int lanes = l.inner == 1 ? 32 : 1;
      const unsigned blocks = blocks_for(rows * lanes);
      const auto* px = static_cast<const D*>(x.data_ptr());
      const auto* pt = static_cast<const int64_t*>(t.data_ptr());
      auto* plse = static_cast<D*>(lse.data_ptr());
      if (lanes == 32) {
        cross_entropy_kernel<D, 32><<<blocks, kThreads, 0, stream>>>(
            px, pt, rows, l.classes, l.inner, ignore_index, plse, row_loss_ptr);
      } else {
        cross_entropy_kernel<D, 1><<<blocks, kThreads, 0, stream>>>(
            px, pt, rows, l.classes, l.inner, ignore_index, plse, row_loss_ptr);
      }
      REMAT_CUDA_LAUNCH_CHECK("cross_entropy_kernel");
    }
    mean_loss_kernel<D><<<1, kThreads, 0, stream>>>(row_loss_ptr, rows, static_cast<double>(count),
                                                    static_cast<D*>(loss.data_ptr()));
    REMAT_CUDA_LAUNCH_CHECK("mean_loss_kernel");
  });
}

void cross_entropy_backward(const Tensor& grad, const Tensor& x, const Tensor& t,
                            const Tensor& lse_c, int64_t ignore_index, const Tensor& out) {
  check_contiguous("cross_entropy_backward", {grad, x, t, lse_c, out});
  const RowLayout l = layout_of(x);
  const int64_t count = count_targets(t, l.classes, ignore_index);
  const int64_t total = x.numel();
  if (total == 0) return;
  DeviceScope scope(out);
  visit_floating(x.dtype(), "cross_entropy_backward", [&]<typename D>() {
    cross_entropy_backward_kernel<D><<<blocks_for(total), kThreads, 0, stream_of(out)>>>(
        static_cast<const D*>(grad.data_ptr()), static_cast<const D*>(x.data_ptr()),
        static_cast<const int64_t*>(t.data_ptr()), static_cast<const D*>(lse_c.data_ptr()), total,
        l.classes, l.inner, ignore_index, static_cast<acc_t<D>>(count),
        static_cast<D*>(out.data_ptr()));
  });
  REMAT_CUDA_LAUNCH_CHECK("cross_entropy_backward_kernel");
}

}  // namespace

const LossKernels loss_kernels{cross_entropy, cross_entropy_backward};

}  // namespace remat::kernels::cuda
