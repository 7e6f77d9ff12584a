// The kernel tables (kernels/<family>.h) as the op layer calls them: what
// their contracts promise beyond the ops' own tests.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/scalar_math.h"
#include "ops/registry.h"
#include "remat/remat.h"
#include "support/error_message.h"

namespace remat {
namespace {

using testing::error_message;

// Integer tensors take only the ops integer_op admits; the others are refused
// before any element is computed, also when the loop would run in parallel.
TEST(ElementwiseKernels, IntegerTensorsRefuseFloatingOps) {
  for (int64_t n : {0, 4, 1 << 17}) {
    const Tensor a = ones({n}, kInt64);
    EXPECT_NE(error_message([&] { div(a, a); }).find("elementwise op"), std::string::npos) << n;
    EXPECT_NE(error_message([&] { pow(a, 2.0); }).find("elementwise op"), std::string::npos) << n;
  }
  const Tensor a = from_vector(std::vector<int64_t>{-3, 2}, {2});
  EXPECT_EQ((a + a).to_vector<int64_t>(), (std::vector<int64_t>{-6, 4}));
}

// The CPU computes float64 GELU with the shared formula, bit for bit.
TEST(ElementwiseKernels, CpuFloat64GeluIsTheSharedFormula) {
  const std::vector<double> xs{-4.0, -1.5, -0.25, 0.0, 0.3, 2.0, 6.0};
  const std::vector<double> y = gelu(from_vector(xs, {7})).to_vector<double>();
  for (size_t i = 0; i < xs.size(); ++i) {
    EXPECT_EQ(y[i], kernels::apply_unary<kernels::UnaryOp::Gelu>(xs[i])) << xs[i];
  }
}

// max's backward reads the gradient as it comes: sum's broadcast (stride 0)
// view, or a transposed one.
TEST(ReduceKernels, MaxBackwardTakesStridedGradients) {
  Tensor x = from_vector(std::vector<double>{1, 5, 2, 7, 3, 0}, {2, 3}).requires_grad_();
  sum(max(x, 1).values).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1, 0, 1, 0, 0}));

  Tensor z = from_vector(std::vector<double>{1, 5, 2, 7, 3, 0, 4, 6}, {2, 2, 2}).requires_grad_();
  const Tensor g = from_vector(std::vector<double>{10, 20, 30, 40}, {2, 2}).transpose(0, 1);
  max(z, 2).values.backward(g);
  EXPECT_EQ(z.grad().to_vector<double>(), (std::vector<double>{0, 10, 0, 30, 20, 0, 0, 40}));
}

// A sum over outer dims with the kept ones contiguous (a bias gradient)
// reads along rows, in blocks of outputs: the same bits as summing the
// transposed copy along its rows, in every floating dtype, for shapes that
// leave partial blocks, several reduced dims and a scale (mean).
TEST(ReduceKernels, ColumnSumsAddInTheRowSumsOrder) {
  for (DType dtype : {kFloat32, kFloat64, kBFloat16}) {
    for (const Shape& shape : {Shape{300, 700}, Shape{5, 7, 130}, Shape{1000, 3}}) {
      const Tensor x = randn(shape, kFloat64).to(dtype);
      std::vector<int64_t> reduced(shape.size() - 1);
      for (size_t d = 0; d < reduced.size(); ++d) reduced[d] = static_cast<int64_t>(d);
      const int64_t columns = shape.back(), rows = x.numel() / columns;
      // Row r of the copy holds output r's terms in the same order.
      const Tensor by_row = reshape(x, {rows, columns}).transpose(0, 1).contiguous();
      const std::string what = fmt::format("{} {}", dtype_name(dtype), shape_str(shape));
      EXPECT_EQ(sum(x, reduced).to_vector<double>(), sum(by_row, {1}).to_vector<double>()) << what;
      EXPECT_EQ(mean(x, reduced).to_vector<double>(), mean(by_row, {1}).to_vector<double>())
          << what;
    }
  }
}

// The op layer hands dropout's kernel contiguous operands: a transposed input
// is masked by row-major position, as its contiguous copy is, and the kernel
// itself refuses a strided one.
TEST(DropoutKernels, StridedInputsAreMaskedByRowMajorPosition) {
  const Tensor x = (randn({16, 24}, kFloat64) + 10.0).transpose(0, 1);
  auto dropout_at = [](const Tensor& in) {
    ops::Attrs attrs = ops::DropoutAttrs{.p = 0.5};
    attrs.philox = PhiloxState{.seed = 99, .offset = 5};
    return ops::call1(ops::op("dropout"), {in}, attrs);
  };
  EXPECT_EQ(dropout_at(x).to_vector<double>(), dropout_at(x.contiguous()).to_vector<double>());
  const Tensor out = Tensor::empty(x.shape(), kFloat64);
  EXPECT_NE(error_message([&] {
              kernels::cpu::dropout_kernels.apply_mask(x, 0.5, 2.0, 99, 5, out);
            }).find("dropout: operand 0"),
            std::string::npos);
}

}  // namespace
}  // namespace remat
