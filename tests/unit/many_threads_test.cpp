// Thread-scale hazards on the plain runtime (so they also run under TSan): a field-style
// stress with a shared transfer array across rounds of fresh threads, thousands of live
// threads, and thread churn that must not grow the shard count past the peak of live threads.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <cstring>
#include <thread>
#include <set>
#include <vector>

#include "api/isoshard.h"
#include "runtime/zone/size_class.hpp"

namespace {

std::uint64_t next(std::uint64_t& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// Every chunk carries its size and a byte pattern derived from its address; a chunk handed
// out twice, or written by the allocator, fails the check at free.
void* make_chunk(std::size_t n) {
  auto* p = static_cast<unsigned char*>(iso_alloc(n));
  std::memcpy(p, &n, sizeof n);
  for (std::size_t i = sizeof n; i < n; ++i) p[i] = static_cast<unsigned char>((reinterpret_cast<std::uintptr_t>(p) >> 4) + i);
  return p;
}

bool chunk_intact(void* v) {
  auto* p = static_cast<unsigned char*>(v);
  std::size_t n;
  std::memcpy(&n, p, sizeof n);
  for (std::size_t i = sizeof n; i < n; ++i)
    if (p[i] != static_cast<unsigned char>((reinterpret_cast<std::uintptr_t>(p) >> 4) + i)) return false;
  return true;
}

TEST(ManyThreads, TransferArrayStressOverRoundsOfFreshThreads) {
  constexpr int kThreads = 6, kRounds = 4, kSteps = 20000, kSlots = 512;
  std::vector<std::atomic<void*>> transfer(kSlots);
  std::atomic<int> corrupt{0};
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t, round] {
        std::uint64_t x = 0x9e3779b97f4a7c15ull * (t + 1) + round;
        std::vector<void*> own;
        for (int i = 0; i < kSteps; ++i) {
          std::uint64_t r = next(x);
          std::size_t n = 16 + r % ((r >> 20) % 8 == 0 ? 40000 : 600);  // mostly small, some big
          void* p = make_chunk(n);
          if (r & 1) {
            // Hand it over: whoever takes the slot's previous chunk frees it.
            void* old = transfer[(r >> 8) % kSlots].exchange(p);
            if (old) {
              if (!chunk_intact(old)) corrupt.fetch_add(1);
              iso_free(old);
            }
          } else {
            own.push_back(p);
            if (own.size() > 64) {
              std::size_t k = (r >> 16) % own.size();
              if (!chunk_intact(own[k])) corrupt.fetch_add(1);
              iso_free(own[k]);
              own[k] = own.back();
              own.pop_back();
            }
          }
        }
        for (void* p : own) {
          if (!chunk_intact(p)) corrupt.fetch_add(1);
          iso_free(p);
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  for (auto& slot : transfer) {
    void* p = slot.exchange(nullptr);
    if (p && !chunk_intact(p)) corrupt.fetch_add(1);
    iso_free(p);
  }
  iso_flush();
  EXPECT_EQ(corrupt.load(), 0);
  iso_verify();
}

TEST(ManyThreads, AThousandLiveThreadsEachAllocateAndFree) {
  constexpr int kLive = 1000;
  iso_stats before{};
  iso_get_stats(&before);
  std::barrier all_allocated(kLive);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kLive; ++t) {
    threads.emplace_back([&, t] {
      void* p = make_chunk(32 + t % 200);
      all_allocated.arrive_and_wait();  // every thread holds a shard at once
      if (!chunk_intact(p)) bad.fetch_add(1);
      iso_free(p);
    });
  }
  for (auto& th : threads) th.join();
  iso_stats after{};
  iso_get_stats(&after);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GE(after.shards - before.shards + before.shards_pooled, std::uint32_t{kLive});
  EXPECT_GE(after.shards_pooled, std::uint32_t{kLive});  // all back in the pool
  // Lazily committed default zones: a thousand idle shards cost far from a thousand times
  // every default zone's pages (here: metadata only, a few KiB per shard).
  EXPECT_LT(after.metadata_bytes - before.metadata_bytes, std::size_t{kLive} * 2 * 1024 * 1024);
}

TEST(ManyThreads, ChurnOfThousandsOfShortThreadsNeverGrowsThePoolPastPeakLiveThreads) {
  constexpr int kLiveAtOnce = 8, kWaves = 250;
  auto size_of = [](int i) { return std::size_t{16} + (i * 37) % 3000; };
  std::set<unsigned> classes;
  for (int i = 0; i < 200; ++i) classes.insert(iso::size_class_of(size_of(i)));
  for (std::size_t d = 16; d <= 8192; d *= 2) classes.insert(iso::size_class_of(d));  // default zones
  iso_stats before{};
  iso_get_stats(&before);
  for (int w = 0; w < kWaves; ++w) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kLiveAtOnce; ++t)
      threads.emplace_back([&] {
        std::vector<void*> ps;
        for (int i = 0; i < 200; ++i) ps.push_back(iso_alloc(size_of(i)));
        for (void* p : ps) iso_free(p);
      });
    for (auto& th : threads) th.join();
  }
  iso_stats after{};
  iso_get_stats(&after);
  // At most one new shard per thread alive at the peak, and each with at most one zone per
  // class used: 2000 threads must not cost 2000 shards or their zones.
  EXPECT_LE(after.shards - before.shards, std::uint32_t{kLiveAtOnce});
  EXPECT_LE(after.zones - before.zones, std::uint32_t{kLiveAtOnce} * classes.size());
}

TEST(ManyThreads, ThreadsBindPooledShardsWhileAnotherThreadTrimsThePool) {
  // iso_trim holds each pooled shard while it trims it; a thread binding that shard waits.
  // Chunks handed from exited threads to live ones must stay intact, and no shard is made
  // for a thread that could have had a pooled one (the trimmer gives each back).
  constexpr int kLiveAtOnce = 4, kWaves = 150;
  std::atomic<bool> done{false};
  std::atomic<void*> handoff[64] = {};
  std::thread trimmer([&] {
    while (!done.load(std::memory_order_relaxed)) iso_trim();
  });
  iso_stats before{};
  iso_get_stats(&before);
  for (int w = 0; w < kWaves; ++w) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kLiveAtOnce; ++t)
      threads.emplace_back([&, w, t] {
        std::vector<void*> ps;
        for (int i = 0; i < 300; ++i) ps.push_back(make_chunk(16 + (i * 53 + w) % 4000));
        for (int i = 0; i < 4; ++i) {  // leave a few for later threads, free what they left
          void* old = handoff[(w * 7 + t * 13 + i) % 64].exchange(ps[i]);
          if (old) {
            EXPECT_TRUE(chunk_intact(old));
            iso_free(old);
          }
        }
        for (std::size_t i = 4; i < ps.size(); ++i) {
          EXPECT_TRUE(chunk_intact(ps[i]));
          iso_free(ps[i]);
        }
      });
    for (auto& th : threads) th.join();
  }
  done.store(true);
  trimmer.join();
  iso_stats after{};
  iso_get_stats(&after);
  // The live threads at the peak (the trimmer never binds one).
  EXPECT_LE(after.shards - before.shards, std::uint32_t{kLiveAtOnce});
  for (auto& h : handoff)
    if (void* p = h.exchange(nullptr)) {
      EXPECT_TRUE(chunk_intact(p));
      iso_free(p);
    }
  iso_flush();  // home now: a later test's thread that binds their shard finds them free
  iso_verify();
}

}  // namespace
