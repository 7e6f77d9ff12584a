// The CPU kernels' one entry to BLAS (OpenBLAS's cblas): a row-major GEMM in
// float or double. Inside an OpenMP region OpenBLAS's OpenMP build runs the
// call on the calling thread, so kernels that tile a problem across threads
// (attention) call it per tile.
#pragma once

#include <cblas.h>

#include <cstdint>
#include <type_traits>

namespace remat::kernels::cpu {

// c = alpha * op(a) @ op(b) + beta * c, with op(a) [m, k] and op(b) [k, n].
template <typename T>
void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, T alpha,
               const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  const auto M = static_cast<blasint>(m), N = static_cast<blasint>(n), K = static_cast<blasint>(k);
  const auto LDA = static_cast<blasint>(lda), LDB = static_cast<blasint>(ldb),
             LDC = static_cast<blasint>(ldc);
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, LDA, b, LDB, beta, c, LDC);
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, LDA, b, LDB, beta, c, LDC);
  }
}

}  // namespace remat::kernels::cpu
