// Matrix products on the CPU through OpenBLAS (contract: kernels/gemm.h).
#include "kernels/gemm.h"

#include "kernels/cpu/blas.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"
#include "kernels/elementwise.h"

namespace remat::kernels::cpu {
namespace {

// How BLAS reads one matrix operand: transposed or not, and its leading dim.
struct BlasMatrix {
  Tensor storage;  // the tensor whose memory is read (a contiguous copy if needed)
  CBLAS_TRANSPOSE trans = CblasNoTrans;
  int64_t ld = 0;
};

BlasMatrix blas_view(const Tensor& t) {
  const int64_t nd = t.dim();
  const int64_t rows = t.shape()[static_cast<size_t>(nd - 2)];
  const int64_t cols = t.shape()[static_cast<size_t>(nd - 1)];
  const int64_t row_stride = t.strides()[static_cast<size_t>(nd - 2)];
  const int64_t col_stride = t.strides()[static_cast<size_t>(nd - 1)];
  if ((col_stride == 1 || cols == 1) && row_stride >= std::max<int64_t>(cols, 1)) {
    return {t, CblasNoTrans, row_stride};
  }
  if ((row_stride == 1 || rows == 1) && col_stride >= std::max<int64_t>(rows, 1)) {
    return {t, CblasTrans, col_stride};
  }
  Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
  elementwise_kernels.copy(t, c);
  return {c, CblasNoTrans, std::max<int64_t>(cols, 1)};
}

// Every row of the contiguous out [rows, n] set to bias [n] (any stride).
template <typename T>
void fill_rows(const Tensor& bias, T* out, int64_t rows, int64_t n) {
  const T* pb = static_cast<const T*>(bias.data_ptr());
  const int64_t bs = bias.strides()[0];
  parallel_for(rows, rows * n >= 2 * kParallelGrain, [&](int64_t r) {
    for (int64_t j = 0; j < n; ++j) out[r * n + j] = pb[j * bs];
  });
}

void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  const size_t nd = out.shape().size();
  const int64_t m = out.shape()[nd - 2], n = out.shape()[nd - 1];
  const int64_t k = a.shape().back();
  Shape batch_shape(out.shape().begin(), out.shape().end() - 2);
  const int64_t batches = numel_of(batch_shape);
  BlasMatrix A = blas_view(a), B = blas_view(b);
  Strides a_batch = broadcast_strides(A.storage, out.shape());
  Strides b_batch = broadcast_strides(B.storage, out.shape());
  a_batch.resize(nd - 2);
  b_batch.resize(nd - 2);
  visit_floating(out.dtype(), "matmul", [&]<typename T>() {
    const T* pa = static_cast<const T*>(A.storage.data_ptr());
    const T* pb = static_cast<const T*>(B.storage.data_ptr());
    T* pc = static_cast<T*>(out.data_ptr());
    // With a bias, out starts as the bias and BLAS accumulates onto it.
    const T beta = bias.defined() ? T(1) : T(0);
    if (bias.defined()) {
      fill_rows(bias, pc, batches * m, n);
    } else if (k == 0) {
      std::fill(pc, pc + out.numel(), T(0));
    }
    if (k == 0) return;
    for (int64_t i = 0; i < batches; ++i) {
      int64_t oa = 0, ob = 0, rem = i;
      for (size_t d = batch_shape.size(); d-- > 0;) {
        int64_t idx = rem % batch_shape[d];
        rem /= batch_shape[d];
        oa += idx * a_batch[d];
        ob += idx * b_batch[d];
      }
      blas_gemm<T>(A.trans, B.trans, m, n, k, T(1), pa + oa, A.ld, pb + ob, B.ld, beta,
                   pc + i * m * n, std::max<int64_t>(n, 1));
    }
  });
}

}  // namespace

const GemmKernels gemm_kernels{matmul};

}  // namespace remat::kernels::cpu
