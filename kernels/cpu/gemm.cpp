// Matrix products on the CPU (contract: kernels/gemm.h): float32 and float64
// through OpenBLAS, bfloat16 through oneDNN where it is built in (AMX or
// AVX-512 BF16, float32 accumulation, one rounding), other 16-bit products
// through float32 copies.
#include "kernels/gemm.h"

#include "kernels/cpu/blas.h"
#include "kernels/cpu/contiguous_copy.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/onednn.h"
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
  return {contiguous_copy(t), CblasNoTrans, std::max<int64_t>(cols, 1)};
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

// Calls gemm(batch, a_offset, b_offset) for every matrix of out's batch
// dims, with the element offsets of its a and b matrices (broadcast batches
// repeat one).
template <typename Gemm>
void for_each_batch(const Tensor& out, const BlasMatrix& A, const BlasMatrix& B, Gemm&& gemm) {
  const size_t nd = out.shape().size();
  const Shape batch_shape(out.shape().begin(), out.shape().end() - 2);
  Strides a_batch = broadcast_strides(A.storage, out.shape());
  Strides b_batch = broadcast_strides(B.storage, out.shape());
  a_batch.resize(nd - 2);
  b_batch.resize(nd - 2);
  const int64_t batches = numel_of(batch_shape);
  for (int64_t i = 0; i < batches; ++i) {
    int64_t oa = 0, ob = 0, rem = i;
    for (size_t d = batch_shape.size(); d-- > 0;) {
      const int64_t idx = rem % batch_shape[d];
      rem /= batch_shape[d];
      oa += idx * a_batch[d];
      ob += idx * b_batch[d];
    }
    gemm(i, oa, ob);
  }
}

struct Dims {
  int64_t m, n, k;
  explicit Dims(const Tensor& a, const Tensor& out)
      : m(out.shape()[out.shape().size() - 2]), n(out.shape().back()), k(a.shape().back()) {}
};

// float32 and float64 through BLAS.
void blas_matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  const Dims d(a, out);
  const BlasMatrix A = blas_view(a), B = blas_view(b);
  visit_floating(out.dtype(), "matmul", [&]<typename T>() {
    const T* pa = static_cast<const T*>(A.storage.data_ptr());
    const T* pb = static_cast<const T*>(B.storage.data_ptr());
    T* pc = static_cast<T*>(out.data_ptr());
    // With a bias, out starts as the bias and BLAS accumulates onto it.
    const T beta = bias.defined() ? T(1) : T(0);
    if (bias.defined()) {
      fill_rows(bias, pc, out.numel() / std::max<int64_t>(d.n, 1), d.n);
    } else if (d.k == 0) {
      std::fill(pc, pc + out.numel(), T(0));
    }
    if (d.k == 0) return;
    for_each_batch(out, A, B, [&](int64_t i, int64_t oa, int64_t ob) {
      blas_gemm<T>(A.trans, B.trans, d.m, d.n, d.k, T(1), pa + oa, A.ld, pb + ob, B.ld, beta,
                   pc + i * d.m * d.n, std::max<int64_t>(d.n, 1));
    });
  });
}

#ifdef REMAT_WITH_ONEDNN

using dnnl::memory;

// A bfloat16 matrix as oneDNN reads it: any unit-stride layout goes in as it
// is (a transposed operand is a column-major one).
memory::desc bf16_matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  return {memory::dims{rows, cols}, memory::data_type::bf16, memory::dims{row_stride, col_stride}};
}

memory::desc bf16_matrix(const BlasMatrix& x, int64_t rows, int64_t cols) {
  return x.trans == CblasNoTrans ? bf16_matrix(rows, cols, x.ld, 1)
                                 : bf16_matrix(rows, cols, 1, x.ld);
}

// A bias as oneDNN reads it: densely, whatever strides a descriptor gives
// (so the caller hands it a contiguous one).
memory::desc bf16_bias(int64_t n) { return bf16_matrix(1, n, n, 1); }

// The matmul primitive of one problem: [m, k] @ [k, n] (+ bias), operands'
// layouts as blas_view reads them. Empty where oneDNN has no implementation.
onednn::Step bf16_matmul_step(const Dims& d, const BlasMatrix& A, const BlasMatrix& B,
                              bool with_bias) {
  static onednn::Cache<onednn::Step> cache;
  const onednn::Cache<onednn::Step>::Key key{d.m,  d.n,     d.k,  A.trans,
                                             A.ld, B.trans, B.ld, with_bias};
  return cache.get(key, [&] {
    const memory::desc bias_desc = with_bias ? bf16_bias(d.n) : memory::desc();
    const dnnl::matmul::primitive_desc pd(
        dnnl::matmul::desc(bf16_matrix(A, d.m, d.k), bf16_matrix(B, d.k, d.n), bias_desc,
                           bf16_matrix(d.m, d.n, d.n, 1)),
        onednn::user_scratchpad(), onednn::engine(), /*allow_empty=*/true);
    if (!pd || onednn::is_reference(pd.impl_info_str())) return onednn::Step{};
    return onednn::Step{dnnl::matmul(pd), pd.scratchpad_desc(), pd.impl_info_str()};
  });
}

// bfloat16 through oneDNN's matmul (AMX or AVX-512 BF16 where the CPU has
// them): float32 accumulation, one rounding. False, having written nothing,
// where oneDNN cannot serve.
bool onednn_matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  onednn::start_call();
  const Dims d(a, out);
  if (d.k == 0) return false;
  if (out.numel() == 0) return true;
  const BlasMatrix A = blas_view(a), B = blas_view(b);
  const Tensor dense_bias = bias.defined() ? contiguous_copy(bias) : bias;
  return onednn::guarded(
      [&] {
        return fmt::format("matmul: bfloat16 {} @ {}", shape_str(a.shape()), shape_str(b.shape()));
      },
      [&] {
        const onednn::Step step = bf16_matmul_step(d, A, B, dense_bias.defined());
        if (!step.primitive) return false;
        const memory::desc a_desc = bf16_matrix(A, d.m, d.k), b_desc = bf16_matrix(B, d.k, d.n);
        const memory::desc c_desc = bf16_matrix(d.m, d.n, d.n, 1);
        const auto* pa = static_cast<const BFloat16*>(A.storage.data_ptr());
        const auto* pb = static_cast<const BFloat16*>(B.storage.data_ptr());
        auto* pc = static_cast<BFloat16*>(out.data_ptr());
        for_each_batch(out, A, B, [&](int64_t i, int64_t oa, int64_t ob) {
          std::unordered_map<int, memory> args{
              {DNNL_ARG_SRC, onednn::wrap(a_desc, pa + oa)},
              {DNNL_ARG_WEIGHTS, onednn::wrap(b_desc, pb + ob)},
              {DNNL_ARG_DST, onednn::wrap(c_desc, pc + i * d.m * d.n)}};
          if (dense_bias.defined()) {
            args.emplace(DNNL_ARG_BIAS, onednn::wrap(bf16_bias(d.n), dense_bias.data_ptr()));
          }
          onednn::execute(step, std::move(args));
        });
        return true;
      });
}

#else

bool onednn_matmul(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { return false; }

#endif

// A 16-bit product oneDNN does not serve: float32 copies through BLAS, the
// result rounded once.
void widened_matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  auto widen = [](const Tensor& t) {
    if (!t.defined()) return t;
    Tensor wide = Tensor::empty(t.shape(), kFloat32, t.device());
    elementwise_kernels.copy(t, wide);
    return wide;
  };
  const Tensor wide_out = Tensor::empty(out.shape(), kFloat32, out.device());
  blas_matmul(widen(a), widen(b), widen(bias), wide_out);
  elementwise_kernels.copy(wide_out, out);
}

// float32 stays on OpenBLAS: oneDNN's float32 brgemm measured 1.0-1.8x
// faster on the deep MLP's shapes, but its per-call scratch made a tight
// BudgetGuard limit fail now and then (BudgetGuard.NonSequentialGraphs-
// AndRetainGraph), which the eviction mode does not yet plan for.
void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  if (!is_reduced_float(out.dtype())) return blas_matmul(a, b, bias, out);
  if (out.dtype() == kBFloat16 && onednn_matmul(a, b, bias, out)) return;
  widened_matmul(a, b, bias, out);
}

}  // namespace

const GemmKernels gemm_kernels{matmul};

}  // namespace remat::kernels::cpu
