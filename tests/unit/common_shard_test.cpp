// The common shard: a new thread's light allocations, their frees from any thread, and what a
// pooled shard keeps of its zones. The unit tests run with no light allocations
// (no_light_allocs.cpp); the tests here set the count themselves (read when a thread binds).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "api/isoshard.h"
#include "runtime/options.hpp"
#include "runtime/root_arena.hpp"
#include "runtime/shard/shard.hpp"
#include "tests/unit/resident_pages.hpp"
#include "tests/unit/scoped_option.hpp"

namespace iso {
namespace {

struct LightAllocs : ScopedOption<std::uint8_t> {
  explicit LightAllocs(std::uint8_t n) : ScopedOption(g_options.light_allocs, n) {}
};
struct RetainMs : ScopedOption<std::uint32_t> {
  explicit RetainMs(std::uint32_t ms) : ScopedOption(g_options.retain_ms, ms) {}
};

bool from_common(const void* p) { return shard_is_common(zone_of(p)->owner); }

TEST(CommonShard, ANewThreadTakesItsFirstAllocationsOfEachClassFromIt) {
  LightAllocs light(8);
  std::thread([] {
    std::vector<void*> small;
    for (int i = 0; i < 8; ++i) {
      small.push_back(iso_alloc(100));
      EXPECT_TRUE(from_common(small.back())) << "light allocation " << i;
    }
    small.push_back(iso_alloc(100));  // the ninth: the thread's own zone
    EXPECT_EQ(zone_of(small.back())->owner, t_shard);
    void* other = iso_alloc(2000);  // another class counts on its own
    EXPECT_TRUE(from_common(other));
    iso_free(other);
    for (void* p : small) iso_free(p);
    EXPECT_EQ(iso_verify(), 0u);
  }).join();
}

TEST(CommonShard, AThreadThatOnlyAllocatesLightlyBindsNoShard) {
  LightAllocs light(16);
  auto body = [] {
    std::vector<void*> ps;
    for (int i = 0; i < 16; ++i)
      for (std::size_t n : {24, 700, 5000}) ps.push_back(iso_alloc(n));
    EXPECT_TRUE(is_sentinel(t_shard)) << "a light thread bound a shard";
    for (void* p : ps) iso_free(p);
    void* more = iso_alloc(24);  // the 17th of its class: now it binds
    EXPECT_FALSE(is_sentinel(t_shard));
    iso_free(more);
  };
  std::thread(body).join();  // the common shard exists; one shard is pooled
  const std::uint32_t shards = shard_count();
  for (int i = 0; i < 4; ++i) {
    std::vector<std::thread> ts;
    for (int k = 0; k < 8; ++k) ts.emplace_back([] {
      for (int j = 0; j < 16; ++j) iso_free(iso_alloc(100));
    });
    for (auto& t : ts) t.join();
  }
  EXPECT_EQ(shard_count(), shards) << "threads that only allocated lightly made shards";
}

TEST(CommonShard, ItsChunksAreFreedAtOnceByAnyThreadAndReusedNext) {
  LightAllocs light(8);
  void* p = nullptr;
  std::thread([&] { p = iso_alloc(300); }).join();
  ASSERT_TRUE(from_common(p));
  std::thread([&] { iso_free(p); }).join();  // a thread whose first call is this free
  void* again = nullptr;
  std::thread([&] { again = iso_alloc(300); }).join();
  EXPECT_EQ(again, p) << "a freed common chunk was not the next one handed out";
  iso_free(again);
}

TEST(CommonShardDeath, DoubleFreeOfACommonChunkAbortsAtTheSecondFree) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  LightAllocs light(8);
  EXPECT_DEATH(std::thread([] {
                 void* p = iso_alloc(112);
                 iso_free(p);
                 iso_free(p);
               }).join(),
               "isoshard: double free of 0x[0-9a-f]+ in zone [0-9]+ \\(112-byte chunks\\)");
}

TEST(CommonShard, ShortThreadsMakeNoZonesOfTheirOwn) {
  LightAllocs light(64);
  constexpr std::size_t kSizes[] = {16, 48, 100, 200, 500, 1000, 3000, 9000};
  auto body = [&] {
    std::vector<void*> ps;
    for (int round = 0; round < 4; ++round)
      for (std::size_t n : kSizes) ps.push_back(iso_alloc(n));
    for (void* p : ps) iso_free(p);
  };
  std::thread(body).join();  // the common shard makes its zones
  const std::uint32_t zones = root_stats().zones;
  for (int i = 0; i < 300; ++i) std::thread(body).join();
  EXPECT_EQ(root_stats().zones, zones) << "short threads made zones of their own";
}

TEST(CommonShard, APooledShardKeepsOnlyThePagesOfChunksStillInUse) {
  LightAllocs light(0);
  void* kept = nullptr;
  std::thread([&] {
    std::vector<void*> ps;
    for (int i = 0; i < 400; ++i) {
      ps.push_back(iso_alloc(4096));
      std::memset(ps.back(), 0x5c, 4096);
    }
    kept = ps[300];  // handed to the main thread: its zone is not empty at exit
    for (void* p : ps)
      if (p != kept) iso_free(p);
  }).join();
  const Zone* z = zone_of(kept);
  ASSERT_GT(z->committed_bytes, std::size_t{1} << 20);
  std::size_t canaries = z->committed_chunks / kCanaryGroupChunks + 1;
  EXPECT_LE(resident_pages(z->user_base, z->committed_bytes),
            kPooledZoneKeepBytes / kPageBytes + 1 + canaries);
  EXPECT_EQ(static_cast<unsigned char*>(kept)[4095], 0x5c);
  iso_free(kept);
  iso_flush();  // send it home now: the next thread to take that pooled shard sees it free
}

TEST(CommonShard, ItsEmptyZonesGoBackToTheOsOnAnotherThreadsSlowPath) {
  RetainMs retain(0);
  const Zone* z = nullptr;
  {
    LightAllocs light(64);
    std::thread([&] {  // a light thread: its chunks come from the common shard
      std::vector<void*> ps;
      for (int i = 0; i < 40; ++i) {
        ps.push_back(iso_alloc(1500));
        std::memset(ps.back(), 0x7e, 1500);
      }
      z = zone_of(ps[0]);
      for (void* p : ps) iso_free(p);
    }).join();
  }
  ASSERT_TRUE(z->common);
  ASSERT_EQ(z->used, 0u);
  ASSERT_GT(z->committed_bytes, 0u) << "an emptied common zone kept no pages to release";
  LightAllocs none(0);
  std::thread([&] {  // a bound thread, never allocating from the common shard again
    // Batches of chunks, so its cache refills (a slow path every 64): its purges run at most
    // once a millisecond, and the bound on rounds only keeps a broken build from spinning.
    std::vector<void*> ps(200);
    for (long round = 0; round < 1000000 && z->committed_bytes != 0; ++round) {
      for (void*& p : ps) p = iso_alloc(64);
      for (void* p : ps) iso_free(p);
    }
  }).join();
  EXPECT_EQ(z->committed_bytes, 0u) << "the common shard's empty zone kept its pages";
  EXPECT_EQ(iso_verify(), 0u);
}

}  // namespace
}  // namespace iso
