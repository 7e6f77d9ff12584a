// Philox: known-answer vectors from the Random123 distribution (kat_vectors),
// and the stream's reservation rule.
#include <gtest/gtest.h>

#include "kernels/philox.h"
#include "remat/remat.h"

using remat::kernels::Philox4;
using remat::kernels::philox4x32_10;

TEST(Philox, KnownAnswerVectors) {
  struct Kat {
    Philox4 counter;
    uint32_t k0, k1;
    Philox4 expected;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       0xffffffff,
       0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       0xa4093822,
       0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Kat& k : kats) {
    Philox4 got = philox4x32_10(k.counter, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], k.expected.v[i]) << i;
  }
}

TEST(Philox, ReservationsAreDisjointAndBlockAligned) {
  remat::manual_seed(123);
  remat::PhiloxState a = remat::reserve_philox(5);
  remat::PhiloxState b = remat::reserve_philox(1);
  remat::PhiloxState c = remat::reserve_philox(0);
  EXPECT_EQ(a.seed, 123u);
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(b.offset, 8u);
  EXPECT_EQ(c.offset, 12u);
  remat::manual_seed(123);
  EXPECT_EQ(remat::reserve_philox(1).offset, 0u);
}

TEST(Philox, UniformIsInOpenClosedUnitInterval) {
  for (uint64_t i = 0; i < 4096; ++i) {
    float u = remat::kernels::philox_uniform(9, 0, i);
    EXPECT_GT(u, 0.0f);
    EXPECT_LE(u, 1.0f);
  }
}
