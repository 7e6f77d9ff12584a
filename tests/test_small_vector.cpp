// SmallVector (the type of Shape and Strides) against std::vector: the same
// contents after the same operations, inline and past the inline capacity.
#include <gtest/gtest.h>

#include <vector>

#include "remat/core/small_vector.h"

namespace remat {
namespace {

using Small = SmallVector<int64_t, 3>;

std::vector<int64_t> contents(const Small& v) { return {v.begin(), v.end()}; }

TEST(SmallVector, GrowsPastItsInlineCapacityKeepingTheElements) {
  Small v;
  std::vector<int64_t> want;
  for (int64_t i = 0; i < 10; ++i) {
    v.push_back(i * 7);
    want.push_back(i * 7);
    ASSERT_EQ(contents(v), want) << i;
  }
  EXPECT_GE(v.capacity(), 10u);
  while (!v.empty()) {
    v.pop_back();
    want.pop_back();
  }
  EXPECT_EQ(contents(v), want);
}

TEST(SmallVector, InsertAndEraseMatchStdVector) {
  for (size_t at = 0; at <= 4; ++at) {
    Small v{1, 2, 3, 4};
    std::vector<int64_t> want{1, 2, 3, 4};
    v.insert(v.begin() + static_cast<std::ptrdiff_t>(at), 9);
    want.insert(want.begin() + static_cast<std::ptrdiff_t>(at), 9);
    EXPECT_EQ(contents(v), want) << at;
    v.insert(v.begin() + static_cast<std::ptrdiff_t>(at), size_t{2}, 5);
    want.insert(want.begin() + static_cast<std::ptrdiff_t>(at), size_t{2}, 5);
    EXPECT_EQ(contents(v), want) << at;
    v.erase(v.begin() + static_cast<std::ptrdiff_t>(at));
    want.erase(want.begin() + static_cast<std::ptrdiff_t>(at));
    EXPECT_EQ(contents(v), want) << at;
    v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(at));
    want.erase(want.begin(), want.begin() + static_cast<std::ptrdiff_t>(at));
    EXPECT_EQ(contents(v), want) << at;
  }
}

// Arguments that are elements of the vector itself stay valid while it grows.
TEST(SmallVector, PushAndInsertOfItsOwnElementsSurviveGrowth) {
  Small v{1, 2, 3};
  v.push_back(v[0]);
  EXPECT_EQ(contents(v), (std::vector<int64_t>{1, 2, 3, 1}));
  v.insert(v.begin(), v.begin(), v.end());
  EXPECT_EQ(contents(v), (std::vector<int64_t>{1, 2, 3, 1, 1, 2, 3, 1}));
  v.insert(v.begin() + 1, v.back());
  EXPECT_EQ(v[1], 1);
  Small w{4, 5, 6, 7};  // on the heap already, so growing frees the block w[1] is in
  w.resize(20, w[1]);
  EXPECT_EQ(contents(w),
            (std::vector<int64_t>{4, 5, 6, 7, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5}));
}

TEST(SmallVector, CopyAndMoveInlineAndOnTheHeap) {
  for (size_t n : {2u, 7u}) {
    Small source;
    for (size_t i = 0; i < n; ++i) source.push_back(static_cast<int64_t>(i) + 1);
    const std::vector<int64_t> want = contents(source);
    Small copy = source;
    EXPECT_EQ(contents(copy), want);
    copy[0] = 100;  // a copy owns its elements
    EXPECT_EQ(source[0], 1);
    Small moved = std::move(source);
    EXPECT_EQ(contents(moved), want);
    EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
    Small assigned{9};
    assigned = std::move(moved);
    EXPECT_EQ(contents(assigned), want);
    assigned = copy;
    EXPECT_EQ(assigned[0], 100);
  }
}

TEST(SmallVector, ComparesConvertsAndChecksBounds) {
  const Small a{1, 2, 3}, b{1, 2, 4}, c{1, 2};
  EXPECT_TRUE(a == Small({1, 2, 3}));
  EXPECT_TRUE(a != b);
  EXPECT_TRUE(a < b);
  EXPECT_TRUE(c < a);
  const std::vector<int64_t> as_vector = a;
  EXPECT_EQ(as_vector, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(Small(as_vector) == a);
  EXPECT_THROW(a.at(3), std::out_of_range);
  Small r(4, 6);
  r.resize(6, 1);
  EXPECT_EQ(contents(r), (std::vector<int64_t>{6, 6, 6, 6, 1, 1}));
}

}  // namespace
}  // namespace remat
