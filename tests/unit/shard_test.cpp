// Shards: binding, cross-thread frees through batches, reuse of released shards.
#include "runtime/shard/shard.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <set>
#include <thread>
#include <vector>

#include "api/isoshard.h"
#include "runtime/options.hpp"
#include "runtime/root_arena.hpp"
#include "tests/unit/cpus.hpp"
#include "tests/unit/scoped_option.hpp"

namespace iso {
namespace {

TEST(Shard, AThreadBindsOnItsFirstAllocationAndOwnsWhatItAllocates) {
  std::thread([] {
    EXPECT_TRUE(is_sentinel(t_shard));
    void* p = iso_alloc(100);
    ASSERT_FALSE(is_sentinel(t_shard));
    EXPECT_EQ(zone_of(p)->owner, t_shard);
    iso_free(p);
    EXPECT_EQ(iso_verify(), 0u);
  }).join();
}

TEST(Shard, ExitedThreadsShardsAreReusedNotMultiplied) {
  for (int i = 0; i < 50; ++i) std::thread([] { iso_free(iso_alloc(64)); }).join();
  iso_stats before{};
  iso_get_stats(&before);
  for (int i = 0; i < 200; ++i) std::thread([] { iso_free(iso_alloc(64)); }).join();
  iso_stats after{};
  iso_get_stats(&after);
  // One thread at a time: every new thread takes the pooled shard of the last.
  EXPECT_EQ(after.shards, before.shards);
}

TEST(Shard, ChunksFreedByAnotherThreadGoHomeInBatches) {
  constexpr int kChunks = 10000;
  std::vector<void*> ptrs;
  for (int i = 0; i < kChunks; ++i) {
    ptrs.push_back(iso_alloc(16 + (i % 700)));
    std::memset(ptrs.back(), i & 0xff, 16);
  }
  std::uint64_t in_use = iso_verify();
  iso_stats before{};
  iso_get_stats(&before);
  std::thread([&] {
    iso_free(iso_alloc(16));  // bound, maybe to a pooled shard that has sent frees before
    iso_stats start{}, s{};
    iso_get_stats(&start);
    for (void* p : ptrs) iso_free(p);
    iso_get_stats(&s);
    EXPECT_EQ(s.remote_frees_sent - start.remote_frees_sent, std::uint64_t{kChunks});
    iso_flush();  // send the partly filled batches too
  }).join();
  iso_flush();  // take them in
  iso_stats after{};
  iso_get_stats(&after);
  EXPECT_EQ(after.remote_frees_received - before.remote_frees_received, std::uint64_t{kChunks});
  EXPECT_EQ(iso_verify(), in_use - kChunks);
}

TEST(Shard, FreesToManyOwnersInTurnTravelInFullBatches) {
  // One thread frees the chunks of 16 owners in turn: the order in which a few direct-mapped
  // outboxes evict a batch at almost every free. Each owner's chunks must still travel in
  // full batches (on 16 CPUs, batches of one or two chunks made larson 18x slower).
  constexpr unsigned kCandidates = 40, kOwners = 16;
  constexpr unsigned kPerOwner = kRemoteBatchChunks * 4;
  std::vector<std::vector<void*>> chunks(kCandidates);
  std::vector<std::uint32_t> ids(kCandidates);
  std::latch allocated(kCandidates), done(1);
  std::vector<std::thread> owners;
  for (unsigned t = 0; t < kCandidates; ++t) {
    owners.emplace_back([&, t] {
      for (unsigned i = 0; i < kPerOwner; ++i) chunks[t].push_back(iso_alloc(48));
      ids[t] = static_cast<Shard*>(t_shard)->id;
      allocated.count_down();
      done.wait();  // bound until the frees are made: the ids stay distinct
    });
  }
  allocated.wait();
  // Owners whose ids share an outbox evict each other by design: take distinct ones.
  std::vector<unsigned> picked;
  std::set<std::uint32_t> slots;
  for (unsigned t = 0; t < kCandidates && picked.size() < kOwners; ++t)
    if (slots.insert(ids[t] % kOutboxCount).second) picked.push_back(t);
  ASSERT_EQ(picked.size(), kOwners);
  iso_stats start{}, end{};
  std::thread([&] {
    iso_free(iso_alloc(16));  // bound: its outboxes start empty
    iso_get_stats(&start);
    for (unsigned i = 0; i < kPerOwner; ++i)
      for (unsigned t : picked) iso_free(chunks[t][i]);
    iso_flush();
    iso_get_stats(&end);
  }).join();
  done.count_down();
  for (auto& th : owners) th.join();
  for (unsigned t = 0; t < kCandidates; ++t)
    if (std::find(picked.begin(), picked.end(), t) == picked.end())
      for (void* p : chunks[t]) iso_free(p);
  EXPECT_EQ(end.remote_frees_sent - start.remote_frees_sent, std::uint64_t{kOwners} * kPerOwner);
  EXPECT_LE(end.remote_batches_sent - start.remote_batches_sent,
            std::uint64_t{kOwners} * (kPerOwner / kRemoteBatchChunks + 1))
      << "frees to many owners went out in partial batches";
}

// Another thread frees ps in order until its first batch goes out; returns how many frees
// that took (0: none went out). The owner then takes the batch in and frees the rest.
std::size_t frees_until_a_batch_goes(std::vector<void*> ps) {
  std::size_t sent_after = 0;
  std::thread([&] {
    iso_free(iso_alloc(16));  // bound: its outboxes start empty
    iso_stats start{};
    iso_get_stats(&start);
    for (std::size_t i = 0; i < ps.size() && sent_after == 0; ++i) {
      iso_free(ps[i]);
      ps[i] = nullptr;
      iso_stats now{};
      iso_get_stats(&now);
      if (now.remote_batches_sent != start.remote_batches_sent) sent_after = i + 1;
    }
    iso_flush();
  }).join();
  iso_flush();  // take them in
  for (void* p : ps)
    if (p) iso_free(p);
  return sent_after;
}

TEST(Shard, ABatchGoesHomeWithItsLastEntry) {
  // The batch's fill word says it is full in one bit test: the kRemoteBatchChunks-th free
  // sends it, not one before or after.
  std::vector<void*> ps;
  for (unsigned i = 0; i < kRemoteBatchChunks + 5; ++i) ps.push_back(iso_alloc(48));
  EXPECT_EQ(frees_until_a_batch_goes(ps), std::size_t{kRemoteBatchChunks});
}

TEST(Shard, ABatchOfBigChunksGoesHomeOnceItHoldsEnoughBytes) {
  // 61 chunks of 100 KiB held in one outbox would keep 6 MiB from its owner: a batch goes
  // out once its chunks add up to kRemoteBatchBytes.
  std::vector<void*> ps;
  for (int i = 0; i < 8; ++i) ps.push_back(iso_alloc(100 * 1024));
  const std::size_t chunk = iso_chunksz(ps[0]);
  const std::size_t expected = (kRemoteBatchBytes + chunk - 1) / chunk;  // frees per batch
  ASSERT_LT(expected, ps.size());
  EXPECT_EQ(frees_until_a_batch_goes(ps), expected) << chunk << "-byte chunks";
}

// Five caches' worth of one class, freed by another thread pinned to the owner's CPU or to
// the next one, come home at once. Either way the batch fills the zone's cache and marks the
// rest in the summary (batches from another CPU went all to the summary once).
// iso_verify checks that every free chunk outside the cache has its summary bit, and
// allocating them again needs no new zone.
void drain_five_caches(bool from_the_owners_cpu) {
  constexpr int kChunks = 5 * kFreelistCacheSlots;
  const std::vector<unsigned> cpus = usable_cpu_list();
  const unsigned owner_cpu = cpus[0];
  const unsigned freeing_cpu = from_the_owners_cpu ? cpus[0] : cpus[1 % cpus.size()];
  std::thread([&] {
    ASSERT_TRUE(pin_to(owner_cpu));
    std::vector<void*> ps;
    for (int i = 0; i < kChunks; ++i) ps.push_back(iso_alloc(48));
    std::set<const Zone*> zones;
    for (void* p : ps) zones.insert(zone_of(p));
    const Zone* z = zone_of(ps.back());
    std::vector<void*> extra;  // empties z's cache: what the drain puts there shows
    while (z->cache.count != 0) extra.push_back(iso_alloc(48));
    const std::uint64_t in_use = iso_verify();
    std::thread([&] {
      ASSERT_TRUE(pin_to(freeing_cpu));
      iso_free(iso_alloc(16));  // bound: these frees go home in batches
      for (void* p : ps) iso_free(p);
      iso_flush();
    }).join();
    iso_flush();  // drain them
    EXPECT_EQ(iso_verify(), in_use - kChunks);
    EXPECT_EQ(z->cache.count, kFreelistCacheSlots) << "the batch left room in the cache";
    iso_stats before{};
    iso_get_stats(&before);
    for (void*& p : ps) {
      p = iso_alloc(48);
      EXPECT_TRUE(zones.count(zone_of(p))) << p;
    }
    iso_stats after{};
    iso_get_stats(&after);
    EXPECT_EQ(after.zones, before.zones);
    for (void* p : ps) iso_free(p);
    for (void* p : extra) iso_free(p);
  }).join();
}

TEST(Shard, ChunksFreedOnTheOwnersCpuComeBackThroughTheCache) { drain_five_caches(true); }

// On a one-CPU machine this is the test above again.
TEST(Shard, ChunksFreedOnAnotherCpuComeBackThroughTheCache) { drain_five_caches(false); }

TEST(Shard, ManyThreadsFreeEachOthersChunks) {
  constexpr int kThreads = 6, kPerThread = 20000;
  std::vector<std::atomic<void*>> slots(kThreads * 64);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::uint64_t x = 88172645463325252ull + t;
      for (int i = 0; i < kPerThread; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        std::size_t n = 16 + x % 2000;
        auto* p = static_cast<unsigned char*>(iso_alloc(n));
        p[0] = static_cast<unsigned char>(n);
        void* old = slots[x % slots.size()].exchange(p);
        if (old) iso_free(old);
      }
      iso_flush();
    });
  }
  for (auto& th : threads) th.join();
  for (auto& s : slots) iso_free(s.exchange(nullptr));
  iso_flush();
  iso_verify();
}

TEST(Shard, AClassThatFilledAZoneGrowsItsNextZoneInOneStep) {
  std::thread([] {
    // The thread may take over a pooled shard that already has zones of this class: allocate
    // four zones' worth, and look at the last zone made, right after its first chunk.
    std::vector<void*> ps;
    ps.push_back(iso_alloc(16384));
    const std::uint64_t in_use_before = iso_verify() - 1;
    const Zone* last = zone_of(ps[0]);
    std::size_t committed_at_first_chunk = last->committed_bytes;
    unsigned zones_seen = 1;
    for (std::uint32_t i = 1; i < 4 * last->chunk_count(); ++i) {
      ps.push_back(iso_alloc(16384));
      const Zone* z = zone_of(ps.back());
      if (z == last) continue;
      last = z;
      committed_at_first_chunk = z->committed_bytes;
      ++zones_seen;
    }
    ASSERT_GE(zones_seen, 3u);
    std::size_t whole = std::size_t{last->chunk_count()} * last->chunk_bytes();
    EXPECT_EQ(committed_at_first_chunk, std::min(whole, kCommitMaxStepBytes))
        << "a zone made after its class filled one did not commit in one step";
    for (void* p : ps) iso_free(p);
    EXPECT_EQ(iso_verify(), in_use_before);
  }).join();
}

std::vector<void*> allocate_n(std::size_t bytes, int n) {
  std::vector<void*> ps;
  for (int i = 0; i < n; ++i) ps.push_back(iso_alloc(bytes));
  return ps;
}

void free_all(const std::vector<void*>& ps) {
  for (void* p : ps) iso_free(p);
}

// Chunks allocated in order, from the first zone on: where the next zone starts.
std::vector<void*>::const_iterator first_of_next_zone(const std::vector<void*>& ps) {
  return std::find_if(ps.begin(), ps.end(), [&](void* p) { return zone_of(p) != zone_of(ps[0]); });
}

TEST(Shard, AZoneReusedSinceItWasEmptyDoesNotCountAgainstTheRetentionBudget) {
  // Two zones empty and are used again; then a full zone empties. Only the last is empty,
  // well inside the budget: it keeps its pages for the next allocations.
  ScopedOption<std::uint32_t> no_purge(g_options.retain_ms, 3600 * 1000);
  ScopedOption<std::size_t> budget(g_options.retain_bytes, std::size_t{6} << 20);
  std::thread([] {
    iso_trim();  // a pooled shard comes with the empty zones its last thread kept: none here
    free_all(allocate_n(32 << 10, 120));  // about 3.75 MiB each, emptied, then in use again
    std::vector<void*> a = allocate_n(32 << 10, 120);
    free_all(allocate_n(40 << 10, 96));
    std::vector<void*> c = allocate_n(40 << 10, 96);
    std::vector<void*> b = allocate_n(64 << 10, 64);  // a full zone (62 and a canary), the next
    const Zone* full = zone_of(b[0]);
    auto next = first_of_next_zone(b);
    ASSERT_NE(next, b.end());
    free_all({b.cbegin(), next});
    ASSERT_EQ(full->used, 0u);
    EXPECT_GT(full->committed_bytes, std::size_t{3} << 20)
        << "an emptied zone was released as if the zones in use still counted";
    free_all({next, b.cend()});
    free_all(a);
    free_all(c);
    EXPECT_EQ(iso_verify(), 0u);
  }).join();
}

TEST(Shard, AnEmptiedZoneOverTheRetentionBudgetGivesItsPagesBack) {
  ScopedOption<std::uint32_t> no_purge(g_options.retain_ms, 3600 * 1000);
  ScopedOption<std::size_t> budget(g_options.retain_bytes, std::size_t{6} << 20);
  std::thread([] {
    iso_trim();  // a pooled shard comes with the empty zones its last thread kept: none here
    std::vector<void*> b = allocate_n(64 << 10, 64);  // each fills a zone of about 3.9 MiB
    std::vector<void*> c = allocate_n(48 << 10, 90);
    const Zone* first = zone_of(b[0]);
    const Zone* second = zone_of(c[0]);
    auto b_next = first_of_next_zone(b);
    auto c_next = first_of_next_zone(c);
    ASSERT_NE(b_next, b.end());
    ASSERT_NE(c_next, c.end());
    free_all({b.cbegin(), b_next});
    EXPECT_GT(first->committed_bytes, std::size_t{3} << 20) << "inside the budget, yet released";
    free_all({c.cbegin(), c_next});
    EXPECT_EQ(second->committed_bytes, 0u) << "over the budget, yet kept";
    EXPECT_GT(first->committed_bytes, std::size_t{3} << 20);
    free_all({b_next, b.cend()});
    free_all({c_next, c.cend()});
    EXPECT_EQ(iso_verify(), 0u);
  }).join();
}

}  // namespace
}  // namespace iso
