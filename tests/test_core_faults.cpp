// Faults that must be exceptions, never crashes or silent wrong answers:
// shapes too large for int64, in-place writes through overlapping memory,
// zero-size tensors, and NaN propagation (issue 12). PyTorch 1.13 is the
// reference for what each case returns or raises.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "core/overlap.h"
#include "ops/registry.h"
#include "remat/remat.h"

using namespace remat;

namespace {

constexpr int64_t k2e32 = int64_t{1} << 32;
constexpr int64_t k2e61 = int64_t{1} << 61;
constexpr int64_t k2e62 = int64_t{1} << 62;

// Runs fn, expecting ErrorType whose message contains every fragment.
template <typename ErrorType, typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const ErrorType& e) {
    for (const std::string& f : fragments) {
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
          << "message '" << e.what() << "' lacks '" << f << "'";
    }
  }
}

}  // namespace

// ---- Shapes whose element or byte count overflows int64 ----------------------

// A value outside the enum (a corrupt byte, a bad cast) is refused, not
// computed on as some type.
TEST(DTypeDispatch, AValueThatIsNoDTypeThrows) {
  for (const auto bad : {DType::Count, static_cast<DType>(99)}) {
    EXPECT_THROW(element_size(bad), Error);
    EXPECT_STREQ(dtype_name(bad), "(no dtype)");
  }
  EXPECT_EQ(element_size(kBool), 1u);
}

TEST(ShapeOverflow, ByteCountOverflowIsAShapeError) {
  // 2^62 float32 elements fit in int64, their 2^64 bytes do not.
  expect_error<ShapeError>([] { zeros({k2e62}); }, {"[4611686018427387904]", "bytes"});
  // As bytes the count fits: the allocator refuses it as memory it cannot have.
  EXPECT_THROW(zeros({k2e62}, kBool), OutOfMemoryError);
}

TEST(ShapeOverflow, ElementCountOverflowIsAShapeError) {
  expect_error<ShapeError>([] { zeros({k2e32, k2e32}); }, {"[4294967296, 4294967296]"});
  // Used to report numel 0 and hand back an empty tensor.
  expect_error<ShapeError>([] { randn({k2e61, 8}); }, {"[2305843009213693952, 8]"});
  expect_error<ShapeError>([] { ones({3, k2e61, 8}, kInt64); }, {"elements"});
}

TEST(ShapeOverflow, ViewsAreCheckedToo) {
  // The view's element count overflows: refused when the view is made.
  Tensor one = zeros({1});
  expect_error<ShapeError>(
      [&] {
        one.expand({k2e62, k2e62});
      },
      {"[4611686018427387904, 4611686018427387904]", "elements"});
  EXPECT_THROW(one.expand({3, k2e62}).contiguous(), ShapeError);
  // 3 * 2^61 elements fit; materialising them (4 bytes each) does not.
  Tensor wide = one.expand({3, k2e61});
  EXPECT_EQ(wide.numel(), 3 * k2e61);
  expect_error<ShapeError>([&] { wide.contiguous(); }, {"bytes"});
  expect_error<ShapeError>([&] { (void)wide.nbytes(); }, {"bytes"});
}

TEST(ShapeOverflow, NegativeSizesAreRejected) {
  expect_error<ShapeError>([] { zeros({-1}); }, {"negative", "[-1]"});
  expect_error<ShapeError>([] { zeros({2, -1}); }, {"negative"});
  Tensor one = zeros({1});
  // expand's -1 means "keep this size" only for existing dims.
  expect_error<ShapeError>([&] { one.expand({-1, 3}); }, {"expand"});
  expect_error<ShapeError>([&] { one.expand({3, -2}); }, {"expand"});
  EXPECT_EQ(one.expand({3, -1}).shape(), (Shape{3, 1}));
}

TEST(ShapeOverflow, EmptyShapesMustHaveStridesThatFit) {
  // A zero makes the count 0, but the contiguous strides multiply the other
  // sizes: those must fit, whichever dim the zero is in (PyTorch refuses the
  // first order and wraps the second's strides).
  Tensor t = zeros({k2e61, 0, 2});
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.nbytes(), 0);
  expect_error<ShapeError>([] { zeros({k2e62, k2e62, 0}); }, {"elements"});
  expect_error<ShapeError>([] { zeros({0, k2e62, k2e62}); }, {"elements"});
}

// ---- In-place writes through overlapping memory ---------------------------------

namespace {

Tensor iota(int64_t n, DType dtype = kFloat32) {
  return arange(0.0, static_cast<double>(n), 1.0, dtype);
}

std::vector<float> values(const Tensor& t) { return t.to_vector<float>(); }

}  // namespace

TEST(InPlaceOverlap, LayoutClassification) {
  Tensor a = iota(12).reshape({3, 4});
  EXPECT_FALSE(has_internal_overlap(a));
  EXPECT_FALSE(has_internal_overlap(a.transpose(0, 1)));
  EXPECT_FALSE(has_internal_overlap(a.slice(1, 0, 4, 3)));
  EXPECT_FALSE(has_internal_overlap(zeros({1}).expand({1, 1})));
  EXPECT_TRUE(has_internal_overlap(zeros({1}).expand({3})));
  EXPECT_TRUE(has_internal_overlap(zeros({3, 1}).expand({3, 2})));
  EXPECT_EQ(overlap(a, a.detach()), Overlap::Same);
  EXPECT_EQ(overlap(a, zeros({3, 4})), Overlap::None);
  EXPECT_EQ(overlap(a.slice(0, 0, 1), a.slice(0, 2, 3)), Overlap::None);
  EXPECT_EQ(overlap(a, a.slice(0, 0, 1)), Overlap::Partial);  // row 0 broadcast
  EXPECT_EQ(overlap(a.slice(1, 0, 2), a.slice(1, 2, 4)), Overlap::Unknown);
}

TEST(InPlaceOverlap, SourceSharingMemoryInAnotherLayoutIsAnError) {
  Tensor a = iota(9).reshape({3, 3});
  const std::vector<float> before = values(a);
  expect_error<Error>([&] { a.add_(a.transpose(0, 1)); },
                      {"add_", "share memory", "[3, 3] float32 on cpu", "strides [1, 3]"});
  expect_error<Error>([&] { a.mul_(a.transpose(0, 1)); }, {"mul_"});
  // Row 0 broadcast over the rows it is added to: rows 1 and 2 would read it doubled.
  expect_error<Error>([&] { a.add_(a.slice(0, 0, 1)); }, {"add_"});
  expect_error<Error>([&] { a.slice(0, 1, 3).copy_(a.slice(0, 0, 2)); }, {"copy_"});
  Tensor h = iota(9, kBFloat16).reshape({3, 3});  // the widened path checks too
  expect_error<Error>([&] { h.add_(h.transpose(0, 1)); }, {"add_"});
  EXPECT_EQ(values(a), before);  // refused before anything was written
}

TEST(InPlaceOverlap, SourceInTheSameLayoutIsFine) {
  Tensor a = iota(6).reshape({2, 3});
  a.add_(a);
  EXPECT_EQ(values(a), (std::vector<float>{0, 2, 4, 6, 8, 10}));
  Tensor t = a.transpose(0, 1);
  t.mul_(a.transpose(0, 1));
  EXPECT_EQ(values(a), (std::vector<float>{0, 4, 16, 36, 64, 100}));
  a.copy_(a.detach());
  EXPECT_EQ(values(a), (std::vector<float>{0, 4, 16, 36, 64, 100}));
}

TEST(InPlaceOverlap, StridedSourcesAreReadBeforeBeingOverwritten) {
  // Interleaved views: their memory ranges intersect, their layouts hide
  // whether elements do, so the source is read from a copy. (PyTorch computes
  // y[6] and y[8] from already-updated elements here: 12 and 20.)
  Tensor y = iota(10);
  y.slice(0, 2, 10, 2).add_(y.slice(0, 0, 8, 2));
  EXPECT_EQ(values(y), (std::vector<float>{0, 1, 2, 3, 6, 5, 10, 7, 14, 9}));
  // Disjoint column blocks of one matrix, the common case.
  Tensor x = iota(8).reshape({2, 4});
  x.slice(1, 0, 2).copy_(x.slice(1, 2, 4));
  EXPECT_EQ(values(x), (std::vector<float>{2, 3, 2, 3, 6, 7, 6, 7}));
}

TEST(InPlaceOverlap, ExpandedDestinationIsAnError) {
  Tensor e = zeros({1}).expand({3});
  expect_error<Error>(
      [&] {
        e.copy_(from_vector(std::vector<float>{1, 2, 3}, {3}));
      },
      {"copy_", "more than one element", "[3] float32 on cpu (strides [0]"});
  expect_error<Error>([&] { e.add_(1.0); }, {"add_"});
  expect_error<Error>([&] { e.mul_(2.0); }, {"mul_"});
  expect_error<Error>([&] { e.add_(ones({3})); }, {"add_"});
  expect_error<Error>([&] { e.mul_(ones({3})); }, {"mul_"});
  // Filling writes one value wherever the indices land, so it is allowed (as in PyTorch).
  e.fill_(2.0);
  EXPECT_EQ(values(e), (std::vector<float>{2, 2, 2}));
  e.zero_();
  EXPECT_EQ(values(e), (std::vector<float>{0, 0, 0}));
}

TEST(InPlaceOverlap, OptimizerOperandsMustNotOverlap) {
  const ops::Attrs attrs = ops::AdamUpdateAttrs{
      .lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0, .step = 1};
  auto step = [&](const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v) {
    NoGradGuard no_grad;
    ops::call(ops::op("adam_update"), {p, g, m, v}, attrs);
  };
  Tensor p = ones({3}), g = ones({3}), m = zeros({3}), v = zeros({3});
  expect_error<Error>([&] { step(p, g, m, m); }, {"adam_update", "share memory"});
  expect_error<Error>([&] { step(p, p, m, v); }, {"adam_update", "share memory"});
  expect_error<Error>([&] { step(zeros({1}).expand({3}), g, m, v); },
                      {"adam_update", "more than one element"});
  step(p, g, m, v);
  EXPECT_LT(values(p)[0], 1.0f);
}

TEST(InPlaceOverlap, BatchNormRunningStatisticsMustNotOverlap) {
  Tensor x = randn({4, 2}), stats = zeros({2});
  expect_error<Error>([&] { batch_norm(x, stats, stats, Tensor(), Tensor(), true); },
                      {"batch_norm", "share memory"});
  expect_error<Error>(
      [&] { batch_norm(x, zeros({1}).expand({2}), ones({2}), Tensor(), Tensor(), true); },
      {"batch_norm", "more than one element"});
  // Eval mode only reads them.
  EXPECT_EQ(batch_norm(x, stats, stats, Tensor(), Tensor(), false).shape(), (Shape{4, 2}));
}

// ---- Zero-size tensors ---------------------------------------------------------

TEST(ZeroSize, TensorsWithoutElementsAreContiguous) {
  // Whatever the strides: there is no element to be out of place (PyTorch agrees).
  EXPECT_TRUE(zeros({2, 0}).is_contiguous());
  EXPECT_TRUE(zeros({3, 0}).transpose(0, 1).is_contiguous());
  EXPECT_TRUE(zeros({1, 0}).expand({3, 0}).is_contiguous());
  // These needed a contiguous output.
  EXPECT_EQ(randn({2, 0}).shape(), (Shape{2, 0}));
  EXPECT_EQ(rand({0, 3}, kFloat64).shape(), (Shape{0, 3}));
  EXPECT_EQ(zeros({3, 0}).transpose(0, 1).contiguous().shape(), (Shape{0, 3}));
}

TEST(ZeroSize, ReductionsFollowPyTorch) {
  Tensor x = zeros({2, 0});
  EXPECT_EQ(sum(x).item<float>(), 0.0f);
  EXPECT_EQ(values(sum(x, {1}, false)), (std::vector<float>{0, 0}));
  EXPECT_EQ(sum(x, {0}, false).shape(), (Shape{0}));
  EXPECT_EQ(mean(x, {0}, false).shape(), (Shape{0}));
  // max along a dim of size 0 has no answer; along another dim it is empty.
  expect_error<ShapeError>([&] { max(x, 1); }, {"max", "dim 1", "[2, 0]"});
  MaxResult m = max(zeros({0, 3}), 1);
  EXPECT_EQ(m.values.shape(), (Shape{0}));
  EXPECT_EQ(m.indices.shape(), (Shape{0}));
}

TEST(ZeroSize, MatmulShapesAndBias) {
  // An empty inner dim sums nothing: zeros, or the bias.
  EXPECT_EQ(values(matmul(zeros({2, 0}), zeros({0, 3}))), std::vector<float>(6, 0.0f));
  EXPECT_EQ(values(matmul(zeros({2, 0}), zeros({0, 3}), ones({3}))), std::vector<float>(6, 1.0f));
  EXPECT_EQ(matmul(zeros({0, 4}), ones({4, 3})).shape(), (Shape{0, 3}));
  EXPECT_EQ(matmul(ones({2, 4}), ones({4, 0})).shape(), (Shape{2, 0}));
  EXPECT_EQ(matmul(ones({0, 2, 4}), ones({4, 3})).shape(), (Shape{0, 2, 3}));
}

TEST(ZeroSize, ShapeOpsFollowPyTorch) {
  Tensor x = zeros({2, 0});
  EXPECT_EQ(x.reshape({0, 5}).shape(), (Shape{0, 5}));
  EXPECT_EQ(x.reshape({-1}).shape(), (Shape{0}));
  EXPECT_EQ(x.reshape({3, -1}).shape(), (Shape{3, 0}));
  EXPECT_EQ(x.transpose(0, 1).view({0}).shape(), (Shape{0}));
  // -1 next to a 0 could be any size.
  EXPECT_THROW(x.reshape({0, -1}), ShapeError);
  Tensor c = concat({zeros({2, 0}), ones({2, 3})}, 1);
  EXPECT_EQ(values(c), std::vector<float>(6, 1.0f));
  EXPECT_EQ(values(concat({zeros({0, 3}), ones({2, 3})}, 0)), std::vector<float>(6, 1.0f));
  EXPECT_EQ(split(x, {0, 0}, 1).size(), 2u);
  EXPECT_EQ(softmax(x, 1).shape(), (Shape{2, 0}));
  EXPECT_EQ(log_softmax(zeros({0, 3}), 1).shape(), (Shape{0, 3}));
  EXPECT_EQ(relu(x).shape(), (Shape{2, 0}));
}

TEST(ZeroSize, ScalarsAlongDimZeroFollowPyTorch) {
  // PyTorch lets dim 0 (or -1) of a 0-d tensor stand for its one element;
  // these indexed past the shape and crashed.
  Tensor s = full({}, 3.0);
  EXPECT_EQ(softmax(s, 0).item<float>(), 1.0f);
  EXPECT_EQ(log_softmax(s, -1).item<float>(), 0.0f);
  EXPECT_EQ(s.transpose(0, -1).shape(), Shape{});
  Tensor leaf = full({}, 3.0);
  leaf.requires_grad_();
  MaxResult m = max(leaf, 0);
  EXPECT_EQ(m.values.item<float>(), 3.0f);
  EXPECT_EQ(m.indices.item<int64_t>(), 0);
  m.values.backward();
  EXPECT_EQ(leaf.grad().item<float>(), 1.0f);
  // Ops that need a real dim refuse it, as PyTorch does.
  expect_error<ShapeError>([&] { (void)s.size(0); }, {"0-d"});
  expect_error<ShapeError>([&] { s.slice(0, 0, 1); }, {"slice", "0-d"});
  expect_error<ShapeError>([&] { split(s, {1}, 0); }, {"split", "0-d"});
  expect_error<ShapeError>([&] { concat({s, s}, 0); }, {"concat", "0-d"});
}

// ---- NaN propagation -----------------------------------------------------------

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

}  // namespace

TEST(NaN, ReluKeepsNaNAndItsGradientPassesLikePyTorch) {
  Tensor x = from_vector(std::vector<float>{-0.0f, kNaN, -1.0f, 2.0f, 0.0f}, {5});
  x.requires_grad_();
  Tensor y = relu(x);
  const std::vector<float> out = values(y);
  EXPECT_TRUE(std::signbit(out[0]) && out[0] == 0.0f);  // relu(-0.0) is -0.0
  EXPECT_TRUE(std::isnan(out[1]));
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], 2.0f);
  EXPECT_EQ(out[4], 0.0f);
  // PyTorch's threshold_backward: 0 where the output is <= 0, else the
  // incoming gradient, so a NaN passes it.
  sum(y).backward();
  EXPECT_EQ(values(x.grad()), (std::vector<float>{0, 1, 0, 1, 0}));
  Tensor d = from_vector(std::vector<double>{kNaN, -3.0}, {2});
  EXPECT_TRUE(std::isnan(relu(d).to_vector<double>()[0]));
}

TEST(NaN, MeanOfNothingIsNaN) {
  EXPECT_TRUE(std::isnan(mean(zeros({0})).item<float>()));
  EXPECT_TRUE(std::isnan(mean(zeros({0}, kFloat64)).item<double>()));
  for (float v : values(mean(zeros({2, 0}), {1}, false))) EXPECT_TRUE(std::isnan(v));
  EXPECT_TRUE(std::isnan(mean(zeros({0}, kBFloat16)).item<float>()));
  // mse_loss is a mean too.
  EXPECT_TRUE(std::isnan(mse_loss(zeros({0}), zeros({0})).item<float>()));
  // An integer mean has no integer answer (PyTorch refuses it too).
  expect_error<Error>([] { mean(ones({4}, kInt64)); }, {"mean", "int64"});
}

TEST(NaN, ReductionsPoolingAndNormalisationPropagateIt) {
  Tensor x = from_vector(std::vector<float>{1, kNaN, 3, kNaN, 1, 5, 2, 0}, {2, 4});
  MaxResult m = max(x, 1);
  EXPECT_TRUE(std::isnan(values(m.values)[0]));
  EXPECT_EQ(values(m.values)[1], 5.0f);
  EXPECT_EQ(m.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 1}));  // the first NaN
  EXPECT_TRUE(std::isnan(sum(x).item<float>()));
  for (float v : values(softmax(x, 1).slice(0, 0, 1))) EXPECT_TRUE(std::isnan(v));
  // A window holding NaNs yields NaN at the last of them (PyTorch's index).
  Tensor p = from_vector(std::vector<float>{1, kNaN, kNaN, 0}, {1, 1, 2, 2});
  EXPECT_TRUE(std::isnan(max_pool2d(p, {2, 2}).item<float>()));
  EXPECT_TRUE(std::isnan(gelu(from_vector(std::vector<float>{kNaN}, {1})).item<float>()));
  // A NaN in a channel makes its batch statistics, running ones included, NaN.
  Tensor b = from_vector(std::vector<float>{1, kNaN, 2, 3}, {2, 2});
  Tensor running_mean = zeros({2}), running_var = ones({2});
  batch_norm(b, running_mean, running_var, Tensor(), Tensor(), true, 0.1, 1e-5);
  EXPECT_TRUE(std::isnan(values(running_var)[1]));
  EXPECT_TRUE(std::isnan(values(running_mean)[1]));
  EXPECT_FALSE(std::isnan(values(running_var)[0]));
}
