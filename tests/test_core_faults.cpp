// Faults that must be exceptions, never crashes or silent wrong answers:
// shapes too large for int64, in-place writes through overlapping memory,
// zero-size tensors, and NaN propagation (issue 12). PyTorch 1.13 is the
// reference for what each case returns or raises.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

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

