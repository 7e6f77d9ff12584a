// The caching allocator: rounding, pools, split/coalesce, best fit, the cache,
// statistics, the memory limit and OOM recovery, the timeline and thread
// safety. Most tests use their own CachingAllocator so that the numbers are
// exact and independent of whatever else the process allocated.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "memory/caching_allocator.h"
#include "remat/core/error.h"
#include "remat/memory/memory.h"
#include "support/limited_backend.h"

namespace remat::memory {
namespace {

constexpr int64_t kKiB = int64_t{1} << 10;
constexpr int64_t kMiB = int64_t{1} << 20;

using remat::testing::LimitedBackend;

void expect_stat(const Stat& s, int64_t current, int64_t peak, int64_t allocated, int64_t freed) {
  EXPECT_EQ(s.current, current);
  EXPECT_EQ(s.peak, peak);
  EXPECT_EQ(s.allocated, allocated);
  EXPECT_EQ(s.freed, freed);
}

uintptr_t address(const Allocation& a) { return reinterpret_cast<uintptr_t>(a.get()); }

TEST(CachingAllocator, RoundsSizesUpTo512Bytes) {
  CachingAllocator alloc(make_cpu_backend());
  Allocation one = alloc.allocate(1);
  EXPECT_EQ(alloc.stats().allocated_bytes.current, 512);
  EXPECT_EQ(alloc.stats().requested_bytes.current, 1);
  EXPECT_EQ(one.size(), 1);
  Allocation exact = alloc.allocate(512);
  Allocation over = alloc.allocate(513);
  EXPECT_EQ(alloc.stats().allocated_bytes.current, 512 + 512 + 1024);
  EXPECT_EQ(alloc.stats().requested_bytes.current, 1 + 512 + 513);
  auto segments = alloc.snapshot();
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].blocks[0].size, 512);
  EXPECT_EQ(segments[0].blocks[0].requested, 1);
  EXPECT_EQ(segments[0].blocks[2].size, 1024);
  EXPECT_EQ(segments[0].blocks[2].requested, 513);
}

TEST(CachingAllocator, ZeroBytesGiveAnEmptyAllocationAndNoStats) {
  CachingAllocator alloc(make_cpu_backend());
  Allocation empty = alloc.allocate(0);
  EXPECT_EQ(empty.get(), nullptr);
  EXPECT_EQ(empty.size(), 0);
  EXPECT_EQ(alloc.stats().allocation_count.allocated, 0);
  EXPECT_EQ(alloc.stats().num_raw_allocs, 0);
  EXPECT_THROW(alloc.allocate(-1), Error);
}

TEST(CachingAllocator, PointersAreAlignedTo64Bytes) {
  CachingAllocator alloc(make_cpu_backend());
  std::vector<Allocation> live;
  for (int64_t bytes : {int64_t{1}, int64_t{100}, int64_t{700}, 5 * kKiB, 2 * kMiB, 11 * kMiB}) {
    live.push_back(alloc.allocate(bytes));
    EXPECT_EQ(address(live.back()) % 64, 0u) << bytes;
    std::memset(live.back().get(), 0xab, static_cast<size_t>(bytes));  // the memory is usable
  }
}

TEST(CachingAllocator, StatsFollowAllocationsAndFrees) {
  CachingAllocator alloc(make_cpu_backend());
  {
    Allocation a = alloc.allocate(1000);  // 1024
    Allocation b = alloc.allocate(3000);  // 3072
    {
      Allocation c = alloc.allocate(100);  // 512
    }
    Allocation d = alloc.allocate(2000);  // 2048
    Stats s = alloc.stats();
    // The peak is now: c was freed before d came.
    expect_stat(s.allocated_bytes, 1024 + 3072 + 2048, 1024 + 3072 + 2048, 1024 + 3072 + 512 + 2048,
                512);
    expect_stat(s.requested_bytes, 1000 + 3000 + 2000, 1000 + 3000 + 2000, 1000 + 3000 + 100 + 2000,
                100);
    expect_stat(s.allocation_count, 3, 3, 4, 1);
    expect_stat(s.reserved_bytes, 2 * kMiB, 2 * kMiB, 2 * kMiB, 0);
    expect_stat(s.segment_count, 1, 1, 1, 0);
    EXPECT_EQ(s.num_raw_allocs, 1);
    EXPECT_EQ(s.num_raw_frees, 0);
  }
  Stats s = alloc.stats();
  int64_t total = 1024 + 3072 + 512 + 2048;
  expect_stat(s.allocated_bytes, 0, 1024 + 3072 + 2048, total, total);
  expect_stat(s.requested_bytes, 0, 1000 + 3000 + 2000, 6100, 6100);
  expect_stat(s.allocation_count, 0, 3, 4, 4);
  // Active equals allocated on the CPU: no stream holds a freed block.
  expect_stat(s.active_bytes, 0, 1024 + 3072 + 2048, total, total);
  // Freed blocks stay cached.
  expect_stat(s.reserved_bytes, 2 * kMiB, 2 * kMiB, 2 * kMiB, 0);
}

TEST(CachingAllocator, PeakTracksTheHighWaterMark) {
  CachingAllocator alloc(make_cpu_backend());
  {
    Allocation a = alloc.allocate(4 * kKiB);
    Allocation b = alloc.allocate(4 * kKiB);
  }
  Allocation c = alloc.allocate(kKiB);
  EXPECT_EQ(alloc.stats().allocated_bytes.peak, 8 * kKiB);
  EXPECT_EQ(alloc.stats().allocated_bytes.current, kKiB);
}

struct PoolCase {
  int64_t request;
  int64_t segment_size;
  bool small_pool;
};

TEST(CachingAllocator, PicksThePoolAndSegmentSizeByRequest) {
  const PoolCase cases[] = {
      {1, 2 * kMiB, true},
      {kMiB, 2 * kMiB, true},               // the largest small request
      {kMiB + 1, 20 * kMiB, false},         // the smallest large request
      {10 * kMiB - 512, 20 * kMiB, false},  // still shares a 20 MiB segment
      {10 * kMiB, 10 * kMiB, false},        // from here: rounded up to 2 MiB
      {11 * kMiB, 12 * kMiB, false},
      {21 * kMiB + 1, 22 * kMiB, false},
  };
  for (const PoolCase& c : cases) {
    CachingAllocator alloc(make_cpu_backend());
    Allocation a = alloc.allocate(c.request);
    auto segments = alloc.snapshot();
    ASSERT_EQ(segments.size(), 1u) << c.request;
    EXPECT_EQ(segments[0].size, c.segment_size) << c.request;
    EXPECT_EQ(segments[0].small_pool, c.small_pool) << c.request;
    EXPECT_EQ(alloc.stats().reserved_bytes.current, c.segment_size) << c.request;
  }
}

TEST(CachingAllocator, SmallAndLargePoolsDoNotShareSegments) {
  CachingAllocator alloc(make_cpu_backend());
  Allocation large = alloc.allocate(2 * kMiB);  // a 20 MiB segment with 18 MiB free
  Allocation small = alloc.allocate(512);       // must not come from the large segment
  EXPECT_EQ(alloc.stats().segment_count.current, 2);
  EXPECT_EQ(alloc.stats().reserved_bytes.current, 22 * kMiB);
}

TEST(CachingAllocator, ReusesACachedBlockWithoutARawAllocation) {
  CachingAllocator alloc(make_cpu_backend());
  uintptr_t first = 0;
  {
    Allocation a = alloc.allocate(5000);
    first = address(a);
  }
  Allocation b = alloc.allocate(5000);
  EXPECT_EQ(address(b), first);
  EXPECT_EQ(alloc.stats().num_raw_allocs, 1);
  EXPECT_EQ(alloc.stats().segment_count.current, 1);

  uintptr_t large_first = 0;
  {
    Allocation big = alloc.allocate(30 * kMiB);
    large_first = address(big);
  }
  Allocation big_again = alloc.allocate(30 * kMiB);
  EXPECT_EQ(address(big_again), large_first);
  EXPECT_EQ(alloc.stats().num_raw_allocs, 2);
}

TEST(CachingAllocator, SplitsOneSegmentAndCoalescesOnFree) {
  CachingAllocator alloc(make_cpu_backend());
  {
    Allocation a = alloc.allocate(512);
    Allocation b = alloc.allocate(1024);
    EXPECT_EQ(alloc.stats().segment_count.current, 1);
    EXPECT_EQ(address(b), address(a) + 512);
    auto segments = alloc.snapshot();
    ASSERT_EQ(segments.size(), 1u);
    ASSERT_EQ(segments[0].blocks.size(), 3u);
    EXPECT_TRUE(segments[0].blocks[0].allocated);
    EXPECT_TRUE(segments[0].blocks[1].allocated);
    EXPECT_FALSE(segments[0].blocks[2].allocated);
    EXPECT_EQ(segments[0].blocks[2].offset, 1536);
    EXPECT_EQ(segments[0].blocks[2].size, 2 * kMiB - 1536);
    EXPECT_EQ(segments[0].allocated_size, 1536);
  }
  auto segments = alloc.snapshot();
  ASSERT_EQ(segments.size(), 1u);
  ASSERT_EQ(segments[0].blocks.size(), 1u);
  EXPECT_EQ(segments[0].blocks[0].offset, 0);
  EXPECT_EQ(segments[0].blocks[0].size, 2 * kMiB);
  EXPECT_FALSE(segments[0].blocks[0].allocated);
  EXPECT_EQ(segments[0].allocated_size, 0);
}

TEST(CachingAllocator, CoalescesWithBothNeighboursInAnyOrder) {
  CachingAllocator alloc(make_cpu_backend());
  Allocation a = alloc.allocate(512);
  Allocation b = alloc.allocate(512);
  Allocation c = alloc.allocate(512);
  Allocation d = alloc.allocate(512);  // keeps the tail apart from c
  a = Allocation();
  c = Allocation();
  ASSERT_EQ(alloc.snapshot()[0].blocks.size(), 5u);  // a free, b, c free, d, tail free
  b = Allocation();                                  // merges with a before it and c after it
  auto blocks = alloc.snapshot()[0].blocks;
  ASSERT_EQ(blocks.size(), 3u);
  EXPECT_FALSE(blocks[0].allocated);
  EXPECT_EQ(blocks[0].size, 1536);
  EXPECT_TRUE(blocks[1].allocated);
  d = Allocation();
  blocks = alloc.snapshot()[0].blocks;
  ASSERT_EQ(blocks.size(), 1u);
  EXPECT_EQ(blocks[0].size, 2 * kMiB);
}

TEST(CachingAllocator, ChoosesTheBestFittingFreeBlock) {
  CachingAllocator alloc(make_cpu_backend());
  // Free holes of 4096, 1024 and 2048 bytes, kept apart by live 512-byte blocks.
  Allocation hole4k = alloc.allocate(4096);
  Allocation fence1 = alloc.allocate(512);
  Allocation hole1k = alloc.allocate(1024);
  Allocation fence2 = alloc.allocate(512);
  Allocation hole2k = alloc.allocate(2048);
  Allocation fence3 = alloc.allocate(512);
  uintptr_t at4k = address(hole4k), at1k = address(hole1k), at2k = address(hole2k);
  hole4k = Allocation();
  hole1k = Allocation();
  hole2k = Allocation();

  Allocation fits1k = alloc.allocate(1000);
  EXPECT_EQ(address(fits1k), at1k);
  Allocation fits2k = alloc.allocate(1500);
  EXPECT_EQ(address(fits2k), at2k);
  Allocation fits4k = alloc.allocate(3000);
  EXPECT_EQ(address(fits4k), at4k);  // split: 3072 used, 1024 left in the hole
  Allocation rest = alloc.allocate(1024);
  EXPECT_EQ(address(rest), at4k + 3072);
  EXPECT_EQ(alloc.stats().num_raw_allocs, 1);
}

TEST(CachingAllocator, LargePoolKeepsSmallRemaindersWithTheBlock) {
  CachingAllocator alloc(make_cpu_backend());
  {
    // 19 MiB gets a 20 MiB segment; the 1 MiB rest is not worth a block.
    Allocation a = alloc.allocate(19 * kMiB);
    EXPECT_EQ(alloc.stats().allocated_bytes.current, 20 * kMiB);
    EXPECT_EQ(alloc.snapshot()[0].blocks.size(), 1u);
  }
  // 2 MiB from the cached 20 MiB segment: the 18 MiB rest becomes a free block.
  Allocation b = alloc.allocate(2 * kMiB);
  EXPECT_EQ(alloc.stats().allocated_bytes.current, 2 * kMiB);
  auto blocks = alloc.snapshot()[0].blocks;
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(blocks[1].size, 18 * kMiB);
  EXPECT_EQ(alloc.stats().num_raw_allocs, 1);
}

TEST(CachingAllocator, SmallPoolSplitsDownToTheLast512Bytes) {
  CachingAllocator alloc(make_cpu_backend());
  Allocation a = alloc.allocate(kMiB);
  Allocation b = alloc.allocate(kMiB - 512);
  Allocation c = alloc.allocate(1);
  EXPECT_EQ(alloc.stats().segment_count.current, 1);
  EXPECT_EQ(alloc.snapshot()[0].allocated_size, 2 * kMiB);
}

TEST(CachingAllocator, EmptyCacheReleasesOnlyWhollyFreeSegments) {
  CachingAllocator alloc(make_cpu_backend());
  Allocation small = alloc.allocate(1000);
  {
    Allocation large = alloc.allocate(3 * kMiB);
    Allocation other_small = alloc.allocate(kMiB);  // second block in small's segment
  }
  EXPECT_EQ(alloc.stats().reserved_bytes.current, 22 * kMiB);
  alloc.empty_cache();
  Stats s = alloc.stats();
  EXPECT_EQ(s.reserved_bytes.current, 2 * kMiB);  // the small segment still holds `small`
  EXPECT_EQ(s.segment_count.current, 1);
  EXPECT_EQ(s.num_raw_frees, 1);
  expect_stat(s.reserved_bytes, 2 * kMiB, 22 * kMiB, 22 * kMiB, 20 * kMiB);
  std::memset(small.get(), 0, 1000);

  small = Allocation();
  alloc.empty_cache();
  s = alloc.stats();
  EXPECT_EQ(s.reserved_bytes.current, 0);
  EXPECT_EQ(s.segment_count.current, 0);
  EXPECT_EQ(s.num_raw_frees, 2);
  EXPECT_TRUE(alloc.snapshot().empty());
}

TEST(CachingAllocator, ResetPeakStatsSetsPeaksToCurrent) {
  CachingAllocator alloc(make_cpu_backend());
  {
    Allocation a = alloc.allocate(30 * kMiB);
    Allocation b = alloc.allocate(100);
  }
  alloc.empty_cache();
  Allocation c = alloc.allocate(600);
  EXPECT_EQ(alloc.stats().allocated_bytes.peak, 30 * kMiB + 512);
  alloc.reset_peak_stats();
  Stats s = alloc.stats();
  expect_stat(s.allocated_bytes, 1024, 1024, 30 * kMiB + 512 + 1024, 30 * kMiB + 512);
  EXPECT_EQ(s.requested_bytes.peak, 600);
  EXPECT_EQ(s.reserved_bytes.peak, 2 * kMiB);
  EXPECT_EQ(s.segment_count.peak, 1);
  EXPECT_EQ(s.allocation_count.peak, 1);
  EXPECT_EQ(s.active_bytes.peak, 1024);
}

TEST(CachingAllocator, MemoryLimitThrowsOutOfMemoryWithContextAndKeepsWorking) {
  CachingAllocator alloc(make_cpu_backend());
  alloc.set_memory_limit(32 * kMiB);
  EXPECT_EQ(alloc.stats().memory_limit, 32 * kMiB);
  Allocation held = alloc.allocate(10 * kMiB);
  alloc.allocate(10 * kMiB);  // freed at once; its segment stays cached
  EXPECT_EQ(alloc.stats().reserved_bytes.current, 20 * kMiB);

  std::string message;
  try {
    alloc.allocate(64 * kMiB);
    ADD_FAILURE() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("out of memory on cpu"), std::string::npos) << message;
  EXPECT_NE(message.find("tried to allocate 64.00 MiB (67108864 bytes)"), std::string::npos)
      << message;
  EXPECT_NE(message.find("allocated 10.00 MiB"), std::string::npos) << message;
  // The retry gave the cached segment back before giving up.
  EXPECT_NE(message.find("reserved 10.00 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("limit 32.00 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("largest free block"), std::string::npos) << message;

  Stats s = alloc.stats();
  EXPECT_EQ(s.num_ooms, 1);
  EXPECT_EQ(s.num_alloc_retries, 1);
  EXPECT_EQ(s.num_raw_frees, 1);
  EXPECT_EQ(s.allocated_bytes.current, 10 * kMiB);

  Allocation after = alloc.allocate(1000);
  EXPECT_NE(after.get(), nullptr);
  s = alloc.stats();
  EXPECT_EQ(s.allocated_bytes.current, 10 * kMiB + 1024);
  EXPECT_EQ(s.num_ooms, 1);

  alloc.set_memory_limit(0);  // no limit: the same request now succeeds
  Allocation big = alloc.allocate(64 * kMiB);
  EXPECT_EQ(alloc.stats().memory_limit, 0);
  EXPECT_THROW(alloc.set_memory_limit(-1), Error);
}

TEST(CachingAllocator, MemoryLimitFreesTheCacheAndRetries) {
  CachingAllocator alloc(make_cpu_backend());
  alloc.set_memory_limit(24 * kMiB);
  alloc.allocate(10 * kMiB);                   // leaves a cached 10 MiB segment
  Allocation big = alloc.allocate(16 * kMiB);  // 10 + 16 > 24: release the cache, then fits
  EXPECT_NE(big.get(), nullptr);
  Stats s = alloc.stats();
  EXPECT_EQ(s.num_alloc_retries, 1);
  EXPECT_EQ(s.num_ooms, 0);
  EXPECT_EQ(s.num_raw_allocs, 2);
  EXPECT_EQ(s.num_raw_frees, 1);
  EXPECT_EQ(s.reserved_bytes.current, 16 * kMiB);
}

TEST(CachingAllocator, ExhaustedBackendRetriesAfterFreeingTheCache) {
  CachingAllocator alloc(std::make_unique<LimitedBackend>(24 * kMiB));
  Allocation small = alloc.allocate(1000);     // 2 MiB segment, stays live
  alloc.allocate(12 * kMiB);                   // 12 MiB segment, cached
  Allocation big = alloc.allocate(16 * kMiB);  // 2 + 12 + 16 > 24: backend says no; retry fits
  EXPECT_NE(big.get(), nullptr);
  Stats s = alloc.stats();
  EXPECT_EQ(s.num_alloc_retries, 1);
  EXPECT_EQ(s.num_ooms, 0);
  EXPECT_EQ(s.reserved_bytes.current, 18 * kMiB);
}

TEST(CachingAllocator, ExhaustedBackendRetriesThenThrows) {
  CachingAllocator alloc(std::make_unique<LimitedBackend>(4 * kMiB));
  Allocation small = alloc.allocate(1000);
  Allocation fills_first_segment = alloc.allocate(kMiB);
  alloc.allocate(kMiB);  // needs a second 2 MiB segment, which stays cached
  EXPECT_EQ(alloc.stats().segment_count.current, 2);

  try {
    alloc.allocate(3 * kMiB);  // a 20 MiB segment from a 4 MiB backend
    ADD_FAILURE() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("tried to allocate 3.00 MiB (3145728 bytes)"), std::string::npos)
        << message;
    EXPECT_NE(message.find("limit none"), std::string::npos) << message;
    EXPECT_NE(message.find("limited backend"), std::string::npos) << message;
  }
  Stats s = alloc.stats();
  EXPECT_EQ(s.num_alloc_retries, 1);
  EXPECT_EQ(s.num_ooms, 1);
  EXPECT_EQ(s.num_raw_allocs, 2);
  EXPECT_EQ(s.num_raw_frees, 1);  // the retry released the cached segment
  EXPECT_EQ(s.reserved_bytes.current, 2 * kMiB);

  Allocation after = alloc.allocate(kMiB);  // the released room is usable again
  EXPECT_NE(after.get(), nullptr);
  EXPECT_EQ(alloc.stats().num_ooms, 1);
}

TEST(CachingAllocator, TimelineRecordsEventsWithNestedTags) {
  CachingAllocator alloc(make_cpu_backend());
  alloc.allocate(100);
  EXPECT_TRUE(alloc.timeline().empty());  // off by default

  alloc.enable_timeline(true);
  EXPECT_EQ(current_tag(), "");
  {
    Allocation outside = alloc.allocate(100);  // reuses the cached segment
    TagScope forward("forward");
    Allocation a = alloc.allocate(30 * kMiB);
    {
      TagScope replay("replay");
      EXPECT_EQ(current_tag(), "replay");
      Allocation b = alloc.allocate(1000);
    }
    EXPECT_EQ(current_tag(), "forward");
  }
  EXPECT_EQ(current_tag(), "");
  alloc.empty_cache();

  struct Expected {
    EventKind kind;
    int64_t bytes;
    int64_t requested;  // Alloc and Free only
    int64_t allocated_after;
    int64_t reserved_after;
    const char* tag;
  };
  const Expected expected[] = {
      {EventKind::Alloc, 512, 100, 512, 2 * kMiB, ""},
      {EventKind::SegmentAlloc, 30 * kMiB, 0, 512, 32 * kMiB, "forward"},
      {EventKind::Alloc, 30 * kMiB, 30 * kMiB, 30 * kMiB + 512, 32 * kMiB, "forward"},
      {EventKind::Alloc, 1024, 1000, 30 * kMiB + 1536, 32 * kMiB, "replay"},
      {EventKind::Free, 1024, 1000, 30 * kMiB + 512, 32 * kMiB, "replay"},
      {EventKind::Free, 30 * kMiB, 30 * kMiB, 512, 32 * kMiB, "forward"},
      {EventKind::Free, 512, 100, 0, 32 * kMiB, ""},  // `outside` dies after the scope
  };
  std::vector<Event> events = alloc.timeline();
  ASSERT_EQ(events.size(), std::size(expected) + 2);
  for (size_t i = 0; i < std::size(expected); ++i) {
    SCOPED_TRACE(i);
    EXPECT_STREQ(event_kind_name(events[i].kind), event_kind_name(expected[i].kind));
    EXPECT_EQ(events[i].bytes, expected[i].bytes);
    EXPECT_EQ(events[i].requested, expected[i].requested);
    EXPECT_EQ(events[i].allocated_after, expected[i].allocated_after);
    EXPECT_EQ(events[i].reserved_after, expected[i].reserved_after);
    EXPECT_EQ(events[i].tag, expected[i].tag);
    EXPECT_NE(events[i].address, 0u);
    if (i > 0) {
      EXPECT_GE(events[i].time_ns, events[i - 1].time_ns);
    }
  }
  EXPECT_EQ(events[1].address, events[2].address);  // the block starts its segment
  // empty_cache releases both segments, in address order.
  const Event& first_release = events[7];
  const Event& second_release = events[8];
  EXPECT_EQ(first_release.kind, EventKind::SegmentFree);
  EXPECT_EQ(second_release.kind, EventKind::SegmentFree);
  EXPECT_LT(first_release.address, second_release.address);
  EXPECT_EQ(first_release.bytes + second_release.bytes, 32 * kMiB);
  EXPECT_EQ(first_release.reserved_after, 32 * kMiB - first_release.bytes);
  EXPECT_EQ(second_release.reserved_after, 0);

  alloc.clear_timeline();
  EXPECT_TRUE(alloc.timeline().empty());
  alloc.set_memory_limit(kMiB);
  EXPECT_THROW(alloc.allocate(100), OutOfMemoryError);
  events = alloc.timeline();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::Oom);
  EXPECT_EQ(events[0].bytes, 100);

  alloc.enable_timeline(false);
  alloc.set_memory_limit(0);
  alloc.allocate(100);
  EXPECT_EQ(alloc.timeline().size(), 1u);  // kept, but nothing new recorded
}

TEST(CachingAllocator, EventKindNames) {
  EXPECT_STREQ(event_kind_name(EventKind::Alloc), "alloc");
  EXPECT_STREQ(event_kind_name(EventKind::Free), "free");
  EXPECT_STREQ(event_kind_name(EventKind::SegmentAlloc), "segment_alloc");
  EXPECT_STREQ(event_kind_name(EventKind::SegmentFree), "segment_free");
  EXPECT_STREQ(event_kind_name(EventKind::Oom), "oom");
}

TEST(CachingAllocator, TagsAreThreadLocal) {
  TagScope here("main");
  std::string seen_by_other;
  std::thread([&] { seen_by_other = current_tag(); }).join();
  EXPECT_EQ(seen_by_other, "");
  EXPECT_EQ(current_tag(), "main");
}

// Every segment is tiled by its blocks, and the blocks add up to the stats.
void expect_snapshot_consistent(const CachingAllocator& alloc) {
  Stats s = alloc.stats();
  int64_t reserved = 0, allocated = 0, live_blocks = 0;
  for (const SegmentInfo& segment : alloc.snapshot()) {
    int64_t offset = 0, segment_allocated = 0;
    for (const BlockInfo& block : segment.blocks) {
      EXPECT_EQ(block.offset, offset);
      EXPECT_GT(block.size, 0);
      EXPECT_EQ(block.size % 512, 0);
      offset += block.size;
      if (block.allocated) {
        segment_allocated += block.size;
        ++live_blocks;
        EXPECT_GT(block.requested, 0);
        EXPECT_LE(block.requested, block.size);
      } else {
        EXPECT_EQ(block.requested, 0);
      }
    }
    for (size_t i = 1; i < segment.blocks.size(); ++i) {  // free neighbours were merged
      EXPECT_FALSE(!segment.blocks[i - 1].allocated && !segment.blocks[i].allocated);
    }
    EXPECT_EQ(offset, segment.size);
    EXPECT_EQ(segment_allocated, segment.allocated_size);
    reserved += segment.size;
    allocated += segment_allocated;
  }
  EXPECT_EQ(reserved, s.reserved_bytes.current);
  EXPECT_EQ(allocated, s.allocated_bytes.current);
  EXPECT_EQ(live_blocks, s.allocation_count.current);
  EXPECT_EQ(static_cast<int64_t>(alloc.snapshot().size()), s.segment_count.current);
}

TEST(CachingAllocator, SnapshotBlocksTileEachSegment) {
  CachingAllocator alloc(make_cpu_backend());
  std::vector<Allocation> live;
  uint32_t state = 12345;  // a fixed LCG: the same mix of sizes and frees every run
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (int step = 0; step < 400; ++step) {
    uint32_t r = next();
    if (!live.empty() && r % 3 == 0) {
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(next() % live.size()));
    } else {
      int64_t bytes = r % 5 == 0 ? 1 + next() % (24 * kMiB) : 1 + next() % (64 * kKiB);
      live.push_back(alloc.allocate(bytes));
    }
    if (step % 50 == 0) expect_snapshot_consistent(alloc);
  }
  expect_snapshot_consistent(alloc);
  live.clear();
  expect_snapshot_consistent(alloc);
  for (const SegmentInfo& segment : alloc.snapshot()) EXPECT_EQ(segment.blocks.size(), 1u);
  alloc.empty_cache();
  EXPECT_EQ(alloc.stats().reserved_bytes.current, 0);
}

TEST(CachingAllocator, ConcurrentAllocationsAndFrees) {
  CachingAllocator alloc(make_cpu_backend());
  constexpr int kThreads = 4;
  constexpr int kIterations = 5000;
  auto work = [&](int seed) {
    std::vector<Allocation> live;
    for (int i = 0; i < kIterations; ++i) {
      int64_t bytes = 1 + (i * 7919 + seed * 104729) % (256 * kKiB);
      live.push_back(alloc.allocate(bytes));
      std::memset(live.back().get(), seed, 16);
      if (live.size() > 8) live.erase(live.begin() + (i % 8));
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(work, t + 1);
  for (auto& t : threads) t.join();
  Stats s = alloc.stats();
  EXPECT_EQ(s.allocated_bytes.current, 0);
  EXPECT_EQ(s.allocated_bytes.allocated, s.allocated_bytes.freed);
  EXPECT_EQ(s.requested_bytes.current, 0);
  EXPECT_EQ(s.allocation_count.current, 0);
  EXPECT_EQ(s.allocation_count.allocated, kThreads * kIterations);
  expect_snapshot_consistent(alloc);
}

TEST(CachingAllocator, AllocationMovesOwnership) {
  CachingAllocator alloc(make_cpu_backend());
  Allocation a = alloc.allocate(1000);
  void* ptr = a.get();
  Allocation b = std::move(a);
  EXPECT_EQ(b.get(), ptr);
  EXPECT_EQ(b.size(), 1000);
  EXPECT_EQ(b.device(), kCPU);
  EXPECT_EQ(alloc.stats().allocation_count.current, 1);
  b = alloc.allocate(2000);  // the old block goes back
  EXPECT_EQ(alloc.stats().allocation_count.current, 1);
  EXPECT_EQ(alloc.stats().allocated_bytes.current, 2048);
}

TEST(CachingAllocator, AllocationMayOutliveItsAllocator) {
  Allocation survivor;
  SegmentInfo leaked;
  {
    CachingAllocator alloc(make_cpu_backend());
    Allocation freed_first = alloc.allocate(100);
    survivor = alloc.allocate(1000);
    std::memset(survivor.get(), 1, 1000);
    leaked = alloc.snapshot().at(0);
  }
  std::memset(survivor.get(), 2, 1000);  // the allocator leaked the segment rather than free it
  survivor = Allocation();               // and releasing the block touches no dead allocator
  // Return the leaked segment by hand (a double free if it had not been leaked).
  make_cpu_backend()->raw_free(reinterpret_cast<void*>(leaked.address),
                               static_cast<size_t>(leaked.size));
}

// The process-wide allocators behind the public functions.

TEST(MemoryApi, CpuAllocationsShowInTheStats) {
  Stats before = stats(kCPU);
  {
    Allocation empty = allocate(kCPU, 0);
    EXPECT_EQ(empty.get(), nullptr);
    EXPECT_EQ(stats(kCPU).allocation_count.allocated, before.allocation_count.allocated);

    Allocation a = allocate(kCPU, 1000);
    EXPECT_NE(a.get(), nullptr);
    EXPECT_EQ(a.device(), kCPU);
    Stats during = stats(kCPU);
    EXPECT_EQ(during.allocated_bytes.current, before.allocated_bytes.current + 1024);
    EXPECT_EQ(during.requested_bytes.current, before.requested_bytes.current + 1000);
    EXPECT_EQ(during.allocation_count.allocated, before.allocation_count.allocated + 1);
  }
  Stats after = stats(kCPU);
  EXPECT_EQ(after.allocated_bytes.current, before.allocated_bytes.current);
  EXPECT_EQ(after.allocated_bytes.freed, before.allocated_bytes.freed + 1024);
  EXPECT_EQ(&allocator_for(kCPU), &allocator_for(kCPU));
}

TEST(MemoryApi, LimitPeaksCacheAndSnapshotOnCpu) {
  empty_cache(kCPU);
  reset_peak_stats(kCPU);
  int64_t base_reserved = stats(kCPU).reserved_bytes.current;
  set_memory_limit(kCPU, base_reserved + 8 * kMiB);
  EXPECT_THROW(allocate(kCPU, 16 * kMiB), OutOfMemoryError);
  set_memory_limit(kCPU, 0);
  {
    Allocation a = allocate(kCPU, 16 * kMiB);
    EXPECT_EQ(stats(kCPU).reserved_bytes.current, base_reserved + 16 * kMiB);
    bool found = false;
    for (const SegmentInfo& s : snapshot(kCPU)) {
      found = found || s.address == reinterpret_cast<uintptr_t>(a.get());
    }
    EXPECT_TRUE(found);
  }
  EXPECT_EQ(stats(kCPU).reserved_bytes.peak, base_reserved + 16 * kMiB);
  empty_cache(kCPU);
  EXPECT_EQ(stats(kCPU).reserved_bytes.current, base_reserved);
  reset_peak_stats(kCPU);
  EXPECT_EQ(stats(kCPU).reserved_bytes.peak, base_reserved);
}

TEST(MemoryApi, PeakWatchesAreIndependentOfResetPeakStatsAndOfEachOther) {
  const int64_t base = stats(kCPU).allocated_bytes.current;
  PeakWatch outer(kCPU);
  EXPECT_EQ(outer.peak(), base);
  {
    Allocation a = allocate(kCPU, 4 * kMiB);
    reset_peak_stats(kCPU);  // the caller's peaks: the watch keeps its own
  }
  EXPECT_EQ(outer.peak(), base + 4 * kMiB);
  EXPECT_EQ(stats(kCPU).allocated_bytes.peak, base + 4 * kMiB);
  {
    PeakWatch inner(kCPU);
    Allocation b = allocate(kCPU, 1 * kMiB);
    EXPECT_EQ(inner.peak(), base + 1 * kMiB);
    outer.restart();
    EXPECT_EQ(outer.peak(), base + 1 * kMiB);
  }
  Allocation c = allocate(kCPU, 2 * kMiB);
  EXPECT_EQ(outer.peak(), base + 2 * kMiB);
}

TEST(MemoryApi, TimelineOnCpu) {
  enable_timeline(kCPU, true);
  {
    TagScope tag("api");
    Allocation a = allocate(kCPU, 4096);
  }
  std::vector<Event> events = timeline(kCPU);
  enable_timeline(kCPU, false);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back().kind, EventKind::Free);
  EXPECT_EQ(events.back().bytes, 4096);
  EXPECT_EQ(events.back().tag, "api");
  clear_timeline(kCPU);
  EXPECT_TRUE(timeline(kCPU).empty());
}

std::unique_ptr<RawBackend> make_fake_cuda_backend(int index) {
  return std::make_unique<LimitedBackend>(64 * kMiB, Device::cuda(index));
}

TEST(MemoryApi, OtherDevicesComeFromTheirRegisteredFactory) {
  // Without a registered CUDA backend (a build without CUDA) the request names
  // the device; with one, allocator_for succeeds and there is nothing to check.
  try {
    allocator_for(Device::cuda(6));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no allocator backend registered for cuda:6"),
              std::string::npos)
        << e.what();
  }
  // A high index no real test uses, so the fake backend cannot leak into one.
  register_backend_factory(DeviceType::CUDA, &make_fake_cuda_backend);
  const Device fake = Device::cuda(7);
  CachingAllocator& alloc = allocator_for(fake);
  EXPECT_EQ(&alloc, &allocator_for(fake));
  EXPECT_EQ(alloc.device(), fake);
  Allocation a = allocate(fake, 1000);
  EXPECT_EQ(a.device(), fake);
  EXPECT_EQ(stats(fake).allocated_bytes.current, 1024);
}

}  // namespace
}  // namespace remat::memory
