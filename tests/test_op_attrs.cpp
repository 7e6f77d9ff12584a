// Typed op attributes (src/ops/attrs.h): Attrs holds an op's struct inline
// with its type, copies and moves it whole, and refuses to be read as another
// type; call() refuses attributes of the wrong type, naming the op.
#include <gtest/gtest.h>

#include "ops/registry.h"
#include "remat/remat.h"
#include "support/error_message.h"

using namespace remat;
using remat::testing::error_message;

TEST(OpAttrs, TypeNamesAreTheStructs) {
  EXPECT_EQ(ops::attrs_type<ops::DimAttrs>()->name, "DimAttrs");
  EXPECT_EQ(ops::attrs_type<ops::Conv2dAttrs>()->name, "Conv2dParams");
  EXPECT_NE(ops::attrs_type<ops::DimAttrs>(), ops::attrs_type<ops::DimsAttrs>());
}

// SplitAttrs' sizes past the inline capacity live on the heap: a copy must
// own its own, a move must leave the source empty but destructible (ASan
// reports a double free or a leak otherwise).
TEST(OpAttrs, CopiesAndMovesHoldTheirOwnValue) {
  const std::vector<int64_t> sizes{1, 2, 3, 4, 5, 6, 7, 8, 9};
  ops::Attrs a = ops::SplitAttrs{.sizes = sizes, .dim = 1};
  a.philox = PhiloxState{.seed = 3, .offset = 4};
  ops::Attrs copy = a;
  a.get<ops::SplitAttrs>().sizes[0] = 100;
  EXPECT_EQ(std::vector<int64_t>(copy.get<ops::SplitAttrs>().sizes), sizes);
  EXPECT_EQ(copy.philox->offset, 4u);
  ops::Attrs moved = std::move(copy);
  EXPECT_EQ(moved.get<ops::SplitAttrs>().dim, 1);
  EXPECT_EQ(moved.get<ops::SplitAttrs>().sizes.size(), sizes.size());
  moved = a;  // assigning over a held value destroys it first
  EXPECT_EQ(moved.get<ops::SplitAttrs>().sizes[0], 100);
  moved = ops::Attrs();
  EXPECT_EQ(moved.type(), nullptr);
}

TEST(OpAttrs, ReadingAnotherTypeThrowsNamingBoth) {
  const ops::Attrs a = ops::DimAttrs{.dim = 2};
  const std::string msg = error_message([&] { (void)a.get<ops::ReduceAttrs>(); });
  EXPECT_NE(msg.find("DimAttrs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ReduceAttrs"), std::string::npos) << msg;
}

TEST(OpAttrs, CallRefusesAttributesOfAnotherOpNamingIt) {
  Tensor x = ones({2, 3});
  const std::string wrong =
      error_message([&] { ops::call1(ops::op("softmax"), {x}, ops::ReduceAttrs{}); });
  for (const char* part : {"softmax", "DimAttrs", "ReduceAttrs"}) {
    EXPECT_NE(wrong.find(part), std::string::npos) << wrong;
  }
  const std::string missing = error_message([&] { ops::call1(ops::op("softmax"), {x}); });
  EXPECT_NE(missing.find("none"), std::string::npos) << missing;
  const std::string extra = error_message([&] {
    ops::call1(ops::op("add"), {x, x}, ops::DimAttrs{});
  });
  EXPECT_NE(extra.find("add"), std::string::npos) << extra;
  // The library keeps working after the errors.
  EXPECT_EQ(softmax(x, 1).shape(), x.shape());
}

// A random op's numbers are the caller's when given, else reserved per call.
TEST(OpAttrs, RandomOpsReserveTheirNumbersUnlessGiven) {
  Tensor x = ones({64});
  ops::Attrs fixed = ops::DropoutAttrs{.p = 0.5};
  fixed.philox = PhiloxState{.seed = 7, .offset = 0};
  const auto a = ops::call1(ops::op("dropout"), {x}, fixed).to_vector<float>();
  const auto b = ops::call1(ops::op("dropout"), {x}, fixed).to_vector<float>();
  EXPECT_EQ(a, b);
  const auto c = dropout(x, 0.5).to_vector<float>();
  const auto d = dropout(x, 0.5).to_vector<float>();
  EXPECT_NE(c, d);  // 2^-64 odds of a false failure
  const std::string msg = error_message(
      [&] { ops::call1(ops::op("dropout_backward"), {x}, ops::DropoutAttrs{.p = 0.5}); });
  EXPECT_NE(msg.find("no random numbers"), std::string::npos) << msg;
}
