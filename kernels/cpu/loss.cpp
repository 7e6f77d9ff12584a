// Cross-entropy on the CPU (contract: kernels/loss.h), rows in parallel with
// OpenMP; float32 and float64, each row's logsumexp in float64.
#include "kernels/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/contiguous.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"

namespace remat::kernels::cpu {
namespace {

struct RowLayout {
  int64_t batch, classes, inner;  // N, C, S
  int64_t rows() const { return batch * inner; }
  // Element offset of class 0 of row r; class c is `inner` further per step.
  int64_t base(int64_t r) const { return (r / inner) * classes * inner + r % inner; }
};

RowLayout layout_of(const Tensor& logits) {
  int64_t inner = 1;
  for (size_t d = 2; d < logits.shape().size(); ++d) inner *= logits.shape()[d];
  return {logits.shape()[0], logits.shape()[1], inner};
}

// Counts the rows that take part and checks the others' targets; runs before
// any parallel loop, since an exception must not leave an OpenMP region.
int64_t count_targets(const int64_t* t, int64_t rows, int64_t classes, int64_t ignore_index) {
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (t[r] == ignore_index) continue;
    REMAT_CHECK(t[r] >= 0 && t[r] < classes,
                "cross_entropy: target {} (at position {}) is out of range for {} classes "
                "(ignore_index is {})",
                t[r], r, classes, ignore_index);
    ++count;
  }
  return count;
}

void cross_entropy(const Tensor& x, const Tensor& t_c, int64_t ignore_index, const Tensor& loss,
                   const Tensor& lse) {
  check_contiguous("cross_entropy", {x, t_c, loss, lse});
  const RowLayout l = layout_of(x);
  const int64_t rows = l.rows();
  const int64_t* t = static_cast<const int64_t*>(t_c.data_ptr());
  const int64_t count = count_targets(t, rows, l.classes, ignore_index);
  visit_floating(x.dtype(), "cross_entropy", [&]<typename T>() {
    const T* px = static_cast<const T*>(x.data_ptr());
    T* plse = static_cast<T*>(lse.data_ptr());
    // Per-row losses summed serially afterwards: the same total for any thread count.
    std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
    parallel_for(rows, rows * l.classes >= 2 * kParallelGrain, [&](int64_t r) {
      const T* p = px + l.base(r);
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < l.classes; ++c) m = std::max(m, static_cast<double>(p[c * l.inner]));
      if (std::isinf(m) && m < 0) m = 0;  // every logit -inf: keep exp finite
      double total = 0;
      for (int64_t c = 0; c < l.classes; ++c) {
        total += std::exp(static_cast<double>(p[c * l.inner]) - m);
      }
      const double row_lse = m + std::log(total);
      plse[r] = static_cast<T>(row_lse);
      if (t[r] != ignore_index) {
        row_loss[static_cast<size_t>(r)] = row_lse - static_cast<double>(p[t[r] * l.inner]);
      }
    });
    double sum = 0;
    for (double v : row_loss) sum += v;
    static_cast<T*>(loss.data_ptr())[0] = static_cast<T>(sum / static_cast<double>(count));
  });
}

void cross_entropy_backward(const Tensor& grad, const Tensor& x, const Tensor& t_c,
                            const Tensor& lse_c, int64_t ignore_index, const Tensor& out) {
  check_contiguous("cross_entropy_backward", {grad, x, t_c, lse_c, out});
  const RowLayout l = layout_of(x);
  const int64_t rows = l.rows();
  const int64_t* t = static_cast<const int64_t*>(t_c.data_ptr());
  const int64_t count = count_targets(t, rows, l.classes, ignore_index);
  visit_floating(x.dtype(), "cross_entropy_backward", [&]<typename T>() {
    const T* px = static_cast<const T*>(x.data_ptr());
    const T* plse = static_cast<const T*>(lse_c.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    const T incoming = *static_cast<const T*>(grad.data_ptr());  // 0-d: one element
    const T scale = incoming / static_cast<T>(count);
    parallel_for(rows, rows * l.classes >= 2 * kParallelGrain, [&](int64_t r) {
      const int64_t base = l.base(r);
      if (t[r] == ignore_index) {
        for (int64_t c = 0; c < l.classes; ++c) o[base + c * l.inner] = T(0);
        return;
      }
      for (int64_t c = 0; c < l.classes; ++c) {
        const int64_t at = base + c * l.inner;
        T prob = std::exp(px[at] - plse[r]);
        o[at] = (prob - (c == t[r] ? T(1) : T(0))) * scale;
      }
    });
  });
}

}  // namespace

const LossKernels loss_kernels{cross_entropy, cross_entropy_backward};

}  // namespace remat::kernels::cpu
