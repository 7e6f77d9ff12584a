// Matrix products on the GPU through cuBLAS (contract: kernels/gemm.h).
#include <climits>
#include <optional>

#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "remat/core/math_mode.h"

namespace remat::kernels::cuda {
namespace {

// Every row of the contiguous out [total / n, n] set to bias [n].
template <typename T>
__global__ void fill_rows_kernel(T* out, const T* bias, int64_t bias_stride, int64_t total,
                                 int64_t n) {
  REMAT_GRID_STRIDE_LOOP(i, total) { out[i] = bias[(i % n) * bias_stride]; }
}

// How cuBLAS reads one operand: cuBLAS is column-major, so a row-major
// matrix with unit column stride is its transpose with no op (CUBLAS_OP_N),
// and one with unit row stride is the matrix itself read transposed
// (CUBLAS_OP_T); ld is the other stride. Batch i starts at i * batch_stride
// elements (0: one matrix broadcast to every batch).
struct GemmOperand {
  Tensor storage;  // the tensor whose memory is read (a copy if needed)
  cublasOperation_t op = CUBLAS_OP_N;
  int64_t ld = 0;
  int64_t batch_stride = 0;
};

// The stride s with which t, broadcast to `full` ([batch..., rows, cols]),
// steps from one flattened batch index to the next, if there is one.
std::optional<int64_t> linear_batch_stride(const Tensor& t, const Shape& full) {
  const Strides strides = broadcast_strides(t, full);
  std::optional<int64_t> stride;
  int64_t inner = 1;  // batches per step of dim d
  for (size_t d = full.size() - 2; d-- > 0;) {
    if (full[d] == 1) continue;
    if (!stride) {
      stride = strides[d];
    } else if (strides[d] != *stride * inner) {
      return std::nullopt;
    }
    inner *= full[d];
  }
  return stride.value_or(0);
}

// t as cuBLAS can read it without a copy, if it can.
std::optional<GemmOperand> matrix_view(const Tensor& t, int64_t batch_stride) {
  const size_t nd = t.shape().size();
  const int64_t rows = t.shape()[nd - 2], cols = t.shape()[nd - 1];
  const int64_t row_stride = t.strides()[nd - 2], col_stride = t.strides()[nd - 1];
  GemmOperand g{t, CUBLAS_OP_N, 0, batch_stride};
  if ((col_stride == 1 || cols == 1) && row_stride >= std::max<int64_t>(cols, 1)) {
    g.ld = row_stride;
  } else if ((row_stride == 1 || rows == 1) && col_stride >= std::max<int64_t>(rows, 1)) {
    g.op = CUBLAS_OP_T;
    g.ld = col_stride;
  } else {
    return std::nullopt;
  }
  if (g.ld > INT_MAX) return std::nullopt;
  return g;
}

// t's operand for a product with batch dims `batch`. A matrix layout cuBLAS
// cannot read is copied to contiguous with t's own shape (which keeps a
// single batch stride if t had one); a batch layout with no single stride is
// expanded to the full batch shape by the copy.
GemmOperand gemm_operand(const Tensor& t, const Shape& batch) {
  Shape full = batch;
  full.push_back(t.shape()[t.shape().size() - 2]);
  full.push_back(t.shape().back());
  const std::optional<int64_t> stride = linear_batch_stride(t, full);
  if (stride) {
    if (std::optional<GemmOperand> g = matrix_view(t, *stride)) return *g;
  }
  Tensor c = Tensor::empty(stride ? t.shape() : full, t.dtype(), t.device());
  elementwise_kernels.copy(t, c);
  const std::optional<int64_t> c_stride = linear_batch_stride(c, full);
  std::optional<GemmOperand> g = c_stride ? matrix_view(c, *c_stride) : std::nullopt;
  REMAT_CHECK(g.has_value(), "matmul on {}: no cuBLAS layout for a contiguous copy of {}",
              t.device(), TensorMeta::of(t).str());
  return *g;
}

template <typename D>
constexpr cudaDataType_t cuda_data_type() {
  if constexpr (std::is_same_v<D, float>) return CUDA_R_32F;
  if constexpr (std::is_same_v<D, double>) return CUDA_R_64F;
  if constexpr (std::is_same_v<D, BFloat16>) return CUDA_R_16BF;
  if constexpr (std::is_same_v<D, Float16>) return CUDA_R_16F;
}

// float64 in float64; the 16-bit floats in float32; float32 in float32 or,
// when allowed, TF32 (read at each call: the switch may change between them).
template <typename D>
cublasComputeType_t compute_type() {
  if constexpr (std::is_same_v<D, double>) return CUBLAS_COMPUTE_64F;
  if constexpr (std::is_same_v<D, float>) {
    if (matmul_allow_tf32()) return CUBLAS_COMPUTE_32F_FAST_TF32;
  }
  return CUBLAS_COMPUTE_32F;
}

void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  check_contiguous("matmul", {out});
  const size_t nd = out.shape().size();
  const int64_t m = out.shape()[nd - 2], n = out.shape()[nd - 1];
  const int64_t k = a.shape().back();
  const Shape batch(out.shape().begin(), out.shape().end() - 2);
  const int64_t batches = numel_of(batch);
  if (out.numel() == 0) return;
  REMAT_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && batches <= INT_MAX,
              "matmul on {}: {} @ {} exceeds cuBLAS's 32-bit sizes", out.device(),
              TensorMeta::of(a).str(), TensorMeta::of(b).str());
  DeviceScope scope(out);
  const cudaStream_t stream = stream_of(out);
  visit_floating(out.dtype(), "matmul", [&]<typename D>() {
    D* pc = static_cast<D*>(out.data_ptr());
    // With a bias, out starts as the bias and cuBLAS accumulates onto it.
    if (bias.defined()) {
      fill_rows_kernel<D><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
          pc, static_cast<const D*>(bias.data_ptr()), bias.strides()[0], out.numel(), n);
      REMAT_CUDA_LAUNCH_CHECK("fill_rows_kernel");
    } else if (k == 0) {
      REMAT_CUDA_CHECK(cudaMemsetAsync(pc, 0, static_cast<size_t>(out.nbytes()), stream));
    }
    if (k == 0) return;
    const GemmOperand A = gemm_operand(a, batch), B = gemm_operand(b, batch);
    // Row-major C = A B is column-major C^T = B^T A^T: B goes first, and the
    // column-major C^T [n, m] has leading dim n.
    const acc_t<D> alpha = 1, beta = bias.defined() ? 1 : 0;
    const cudaDataType_t type = cuda_data_type<D>();
    REMAT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        cublas_handle(out), B.op, A.op, static_cast<int>(n), static_cast<int>(m),
        static_cast<int>(k), &alpha, B.storage.data_ptr(), type, static_cast<int>(B.ld),
        B.batch_stride, A.storage.data_ptr(), type, static_cast<int>(A.ld), A.batch_stride, &beta,
        pc, type, static_cast<int>(n), m * n, static_cast<int>(batches), compute_type<D>(),
        CUBLAS_GEMM_DEFAULT));
  });
}

}  // namespace

const GemmKernels gemm_kernels{matmul};

}  // namespace remat::kernels::cuda
