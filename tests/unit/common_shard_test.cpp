// The common shard: a new thread's light allocations, their frees from any thread, and what a
// pooled shard keeps of its zones. The unit tests run with no light allocations
// (no_light_allocs.cpp); the tests here set the count themselves (read when a thread binds).
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <latch>
#include <thread>
#include <vector>

#include "api/isoshard.h"
#include "runtime/options.hpp"
#include "runtime/platform.hpp"
#include "runtime/root_arena.hpp"
#include "runtime/shard/shard.hpp"
#include "tests/unit/cpus.hpp"
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
// Tests that count the common shard's zones or shards, or expect one thread to reuse what
// another freed, use one stripe: otherwise threads on other CPUs use other stripes.
struct Stripes : ScopedOption<std::uint8_t> {
  explicit Stripes(std::uint8_t n) : ScopedOption(g_options.common_stripes, n) {}
};

bool from_common(const void* p) { return shard_is_common(zone_of(p)->owner); }
unsigned stripe_of(const void* p) { return static_cast<const Shard*>(zone_of(p)->owner)->stripe; }

// Runs f on a new thread that runs on cpu alone.
template <class F>
void on_cpu(unsigned cpu, F f) {
  std::thread([&] {
    ASSERT_TRUE(pin_to(cpu));
    f();
  }).join();
}

TEST(CommonShard, ANewThreadTakesItsFirstAllocationsOfEachClassFromIt) {
  LightAllocs light(8);
  std::thread([] {
    std::vector<void*> small;
    for (int i = 0; i < 8; ++i) {
      small.push_back(iso_alloc(100));
      EXPECT_TRUE(from_common(small.back())) << "light allocation " << i;
    }
    // Another class counts on its own. Asked before the thread binds: a shard it takes from
    // the pool may already have a zone of that class, and then serves it itself.
    void* other = iso_alloc(2000);
    EXPECT_TRUE(from_common(other));
    small.push_back(iso_alloc(100));  // the ninth: the thread's own zone
    EXPECT_EQ(zone_of(small.back())->owner, t_shard);
    iso_free(other);
    for (void* p : small) iso_free(p);
    EXPECT_EQ(iso_verify(), 0u);
  }).join();
}

TEST(CommonShard, AThreadThatOnlyAllocatesLightlyBindsNoShard) {
  LightAllocs light(16);
  Stripes one(1);
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
  Stripes one(1);
  void* p = nullptr;
  std::thread([&] { p = iso_alloc(300); }).join();
  ASSERT_TRUE(from_common(p));
  std::thread([&] { iso_free(p); }).join();  // a thread whose first call is this free
  void* again = nullptr;
  std::thread([&] { again = iso_alloc(300); }).join();
  EXPECT_EQ(again, p) << "a freed common chunk was not the next one handed out";
  iso_free(again);
}

TEST(CommonShard, ALightAllocationComesFromItsThreadsCpuStripeAndGoesBackToItFromAnyCpu) {
  LightAllocs light(8);
  Stripes all(kMaxCommonStripes);  // stripe = CPU number, modulo 64
  std::vector<unsigned> cpus = usable_cpu_list();
  ASSERT_FALSE(cpus.empty());
  if (cpus.size() > 2) cpus.resize(2);
  for (std::size_t k = 0; k < cpus.size(); ++k) {
    const unsigned cpu = cpus[k], other = cpus[(k + 1) % cpus.size()];
    void* p = nullptr;
    on_cpu(cpu, [&] { p = iso_alloc(300); });
    ASSERT_TRUE(from_common(p));
    EXPECT_EQ(stripe_of(p), cpu % kMaxCommonStripes) << "allocated on CPU " << cpu;
    on_cpu(other, [&] { iso_free(p); });  // under the owning stripe's lock, from anywhere
    void* again = nullptr;
    on_cpu(cpu, [&] { again = iso_alloc(300); });
    EXPECT_EQ(again, p) << "a chunk freed from CPU " << other << " was not reused next on CPU " << cpu;
    iso_free(again);
  }
  EXPECT_EQ(iso_verify(), 0u);
}

TEST(CommonShard, ThreadsOnEveryCpuTradeLightChunksAcrossStripes) {
  // Light chunks made on one CPU's stripe are freed by threads on the others while those
  // allocate from their own stripes: each free must take the owning stripe's lock (ThreadSanitizer
  // checks that in its build) and no chunk may be handed out twice.
  LightAllocs light(64);
  Stripes four(4);
  const std::vector<unsigned> cpus = usable_cpu_list();
  constexpr int kThreads = 8, kRounds = 20;
  constexpr std::size_t kSizes[] = {32, 208, 1504};  // multiples of 16: the size byte
  std::vector<std::atomic<unsigned char*>> slots(64);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      ASSERT_TRUE(pin_to(cpus[t % cpus.size()]));
      for (int r = 0; r < kRounds; ++r) {
        std::size_t n = kSizes[(t + r) % 3];
        auto* mine = static_cast<unsigned char*>(iso_alloc(n));
        std::memset(mine, t, n);
        mine[0] = static_cast<unsigned char>(n / 16);  // the size, to check at free
        unsigned char* old = slots[(t * 7 + r) % slots.size()].exchange(mine);
        if (!old) continue;
        std::size_t old_n = std::size_t{old[0]} * 16;
        EXPECT_EQ(old[old_n - 1], old[1]) << "a light chunk was overwritten while in use";
        iso_free(old);
      }
    });
  }
  for (auto& th : ts) th.join();
  for (auto& s : slots)
    if (unsigned char* p = s.exchange(nullptr)) iso_free(p);
  EXPECT_EQ(iso_verify(), 0u);
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
  Stripes one(1);
  constexpr std::size_t kSizes[] = {16, 48, 100, 200, 500, 1000, 3000, 9000};
  auto body = [&] {
    std::vector<void*> ps;
    for (int round = 0; round < 4; ++round)
      for (std::size_t n : kSizes) ps.push_back(iso_alloc(n));
    for (void* p : ps) iso_free(p);
  };
  iso_stats before{}, after{};
  iso_get_stats(&before);
  std::thread(body).join();  // the common shard makes its zones
  iso_get_stats(&after);
  EXPECT_EQ(after.common_zones - before.common_zones, after.zones - before.zones)
      << "zones a light thread made were not counted as the common shard's";
  const std::uint32_t zones = root_stats().zones;
  for (int i = 0; i < 300; ++i) std::thread(body).join();
  EXPECT_EQ(root_stats().zones, zones) << "short threads made zones of their own";
}

// A thread that allocated 400 pages' worth of 4 KiB chunks, freed all but one (returned) and
// exited: its shard is in the pool, its zone holding that one chunk. resident_at_exit: the
// zone's resident pages just before the thread ended.
void* exit_after_a_burst(std::size_t* resident_at_exit = nullptr) {
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
    const Zone* z = zone_of(kept);
    if (resident_at_exit) *resident_at_exit = resident_pages(z->user_base, z->committed_bytes);
  }).join();
  return kept;
}

// Resident pages a pooled shard's zone may keep once trimmed: its first kPooledZoneKeepBytes,
// the page of the chunk still in use and those of the canaries.
std::size_t trimmed_pages(const Zone* z) {
  return kPooledZoneKeepBytes / kPageBytes + 1 + z->committed_chunks / kCanaryGroupChunks + 1;
}

TEST(CommonShard, APooledShardKeepsItsPagesForTheNextThread) {
  // Thread churn takes the newest pooled shard first: giving its pages back at every exit
  // made the next thread fault them in again.
  LightAllocs light(0);
  RetainMs retain(3600 * 1000);
  std::size_t at_exit = 0;
  void* kept = exit_after_a_burst(&at_exit);
  const Zone* z = zone_of(kept);
  ASSERT_GT(at_exit, trimmed_pages(z) + 200);
  EXPECT_EQ(resident_pages(z->user_base, z->committed_bytes), at_exit)
      << "the exiting thread gave pages back";
  iso_free(kept);
  iso_flush();  // send it home now: the next thread to take that pooled shard sees it free
}

TEST(CommonShard, APooledShardGivesBackFreePagesOnceItHasWaitedRetainMs) {
  LightAllocs light(0);
  RetainMs retain(0);
  void* kept = exit_after_a_burst();
  const Zone* z = zone_of(kept);
  ASSERT_GT(z->committed_bytes, std::size_t{1} << 20);
  // The main thread's purges trim it (at most once a millisecond: the bound on rounds only
  // keeps a broken build from spinning).
  std::vector<void*> ps(200);
  auto resident = [z] { return resident_pages(z->user_base, z->committed_bytes); };
  for (long round = 0; round < 1000000 && resident() > trimmed_pages(z); ++round) {
    for (void*& p : ps) p = iso_alloc(64);
    for (void* p : ps) iso_free(p);
  }
  EXPECT_LE(resident_pages(z->user_base, z->committed_bytes), trimmed_pages(z));
  EXPECT_EQ(static_cast<unsigned char*>(kept)[4095], 0x5c);  // the chunk in use kept its data
  iso_free(kept);
  iso_flush();
}

TEST(CommonShard, TrimGivesBackAPooledShardsFreePagesAtOnce) {
  LightAllocs light(0);
  RetainMs retain(3600 * 1000);
  void* kept = exit_after_a_burst();
  const Zone* z = zone_of(kept);
  EXPECT_EQ(iso_trim(), 1);
  EXPECT_LE(resident_pages(z->user_base, z->committed_bytes), trimmed_pages(z));
  EXPECT_EQ(static_cast<unsigned char*>(kept)[4095], 0x5c);
  EXPECT_EQ(iso_trim(), 0) << "nothing left to give back";
  iso_free(kept);
  iso_flush();
}

// Pooled shards whose pages are not trimmed yet.
std::uint32_t untrimmed_pooled_shards() {
  std::uint32_t n = 0;
  for (std::uint32_t id = 0; id < shard_count(); ++id)
    n += shard_by_id(id)->untrimmed_since_ms.load() != 0;
  return n;
}

TEST(CommonShard, APurgeTrimsAFewPooledShardsAtATime) {
  LightAllocs light(0);
  RetainMs retain(0);
  iso_trim();  // none left from earlier tests
  constexpr int kThreads = 3 * kPoolTrimsPerPurge;
  std::latch all_bound(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {  // all alive at once: each exits with a shard of its own
      std::vector<void*> ps;
      for (int i = 0; i < 64; ++i) ps.push_back(iso_alloc(4096));
      all_bound.arrive_and_wait();
      for (void* p : ps) iso_free(p);
    });
  for (auto& t : threads) t.join();
  // Their own purges may have trimmed some of those that left first.
  const std::uint32_t before = untrimmed_pooled_shards();
  ASSERT_GT(before, kPoolTrimsPerPurge);
  shard_trim_pooled(os::now_ms() + 1, false);  // one purge, past the time gate
  EXPECT_EQ(untrimmed_pooled_shards(), before - kPoolTrimsPerPurge);
  EXPECT_EQ(iso_trim(), 1);  // the rest at once
  EXPECT_EQ(untrimmed_pooled_shards(), 0u);
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
