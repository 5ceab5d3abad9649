// Hazard: a thread whose very first allocator call is a free. Such a thread has no shard
// yet (its t_shard is the sentinel), so free must not touch shard state that does not
// exist: free(NULL) must be a no-op, and a free of another thread's chunk must bind a shard
// (or route the chunk home) instead of crashing or losing it.
#include <malloc.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "api/isoshard.h"
#include "tests/api/test_support.hpp"

namespace {

using isotest::escape;
using isotest::opaque;

iso_stats stats() {
  iso_stats s{};
  iso_get_stats(&s);
  return s;
}

TEST(FirstCallIsFree, FreeOfNullOnAFreshThreadIsANoOpAndTheThreadAllocatesAfterwards) {
  bool ok = false;
  std::uint64_t in_use = 0;
  std::thread t([&] {
    free(opaque(static_cast<void*>(nullptr)));  // the thread's first allocator call
    free(opaque(static_cast<void*>(nullptr)));
    isotest::own_zones_from_now();  // then what it allocates is in its own zones
    std::vector<char*> blocks;
    for (std::size_t n = 1; n < 70000; n = n * 2 + 3) {
      auto* p = static_cast<char*>(malloc(opaque(n)));
      if (!p) return;
      std::memset(p, 0x33, n);
      blocks.push_back(p);
    }
    in_use = iso_verify();
    for (char* p : blocks) free(p);
    ok = true;
  });
  t.join();
  EXPECT_TRUE(ok);
  EXPECT_GT(in_use, 0u) << "the thread's allocations are not in its own zones";
}

TEST(FirstCallIsFree, ThreadsThatOnlyFreeNullCostNoShard) {
  // free(NULL) is the one free that needs no shard: threads that only ever free NULL must
  // not make isoshard create (and keep) a shard each. Raw pthreads: std::thread would free
  // its creator's state object on the new thread.
  const iso_stats before = stats();
  auto body = [] {
    for (int k = 0; k < 100; ++k) free(opaque(static_cast<void*>(nullptr)));
  };
  for (int round = 0; round < 10; ++round) {
    isotest::RawThread<decltype(body)> a(body), b(body), c(body), d(body);
    ASSERT_TRUE(a.started() && b.started() && c.started() && d.started());
  }
  const iso_stats after = stats();
  EXPECT_EQ(after.shards, before.shards);
}

TEST(FirstCallIsFree, FreeOfAnotherThreadsChunksAsFirstCallSendsThemHome) {
  // An owner thread allocates the chunks and waits; each worker's first allocator call is a
  // free of one of them. (The owner is not the main thread, whose zones also hold what
  // glibc allocates for new threads and would blur the in-use count.)
  constexpr int kThreads = 16, kPerThread = 100;
  std::vector<void*> blocks(kThreads * kPerThread);
  isotest::Event allocated, workers_done;
  iso_stats before{}, after{};
  std::uint64_t in_use_before = 0, in_use_after = 0;
  std::thread owner([&] {
    isotest::own_zones_from_now();
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      blocks[i] = malloc(opaque(std::size_t{16} + 16 * (i % 40)));
      if (blocks[i]) std::memset(blocks[i], 0x44, 16);
    }
    before = stats();
    in_use_before = iso_verify();
    allocated.set();
    workers_done.wait();  // no allocation, no free meanwhile
    iso_flush();
    after = stats();
    in_use_after = iso_verify();
  });
  allocated.wait();
  for (void* p : blocks) ASSERT_NE(p, nullptr);
  struct Body {
    void** first;
    void operator()() const {
      for (int k = 0; k < kPerThread; ++k) free(first[k]);
    }
  };
  for (int round = 0; round < kThreads / 4; ++round) {
    std::vector<Body> bodies;
    for (int i = 0; i < 4; ++i) bodies.push_back(Body{&blocks[(round * 4 + i) * kPerThread]});
    isotest::RawThread<Body> a(bodies[0]), b(bodies[1]), c(bodies[2]), d(bodies[3]);
    // Joined at scope end: the exiting threads send their partial batches.
  }
  workers_done.set();
  owner.join();
  EXPECT_EQ(after.remote_frees_received - before.remote_frees_received,
            std::uint64_t{kThreads * kPerThread});
  EXPECT_EQ(in_use_before - in_use_after, std::uint64_t{kThreads * kPerThread})
      << "chunks freed by first-call threads are still in use in the owner's zones";
}

TEST(FirstCallIsFree, FreeOfBigAllocationAsFirstCall) {
  // Big allocations are not owned by a shard: the free goes straight to the root.
  constexpr int kThreads = 8;
  std::vector<void*> big;
  for (int i = 0; i < kThreads; ++i) {
    big.push_back(malloc(opaque(std::size_t{300000} * (i + 1))));  // above the size classes
    ASSERT_NE(big.back(), nullptr);
  }
  const iso_stats before = stats();
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i) ts.emplace_back([p = big[i]] { free(p); });
  for (auto& t : ts) t.join();
  const iso_stats after = stats();
  EXPECT_EQ(before.big_live - after.big_live, static_cast<std::uint32_t>(kThreads));
}

TEST(FirstCallIsFree, OtherFirstCallsOnAnotherThreadsChunk) {
  // realloc, malloc_usable_size and iso_chunksz as a thread's first call, on main's chunk.
  void* a = malloc(opaque(std::size_t{100}));
  void* b = malloc(opaque(std::size_t{100}));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  isotest::fill_pattern(a, 100, 1);
  std::size_t usable = 0, chunksz = 0;
  void* grown = nullptr;
  std::thread t1([&] { usable = malloc_usable_size(b); });
  t1.join();
  std::thread t2([&] { chunksz = iso_chunksz(b); });
  t2.join();
  std::thread t3([&] { grown = realloc(a, opaque(std::size_t{5000})); });
  t3.join();
  EXPECT_GE(usable, 100u);
  EXPECT_EQ(chunksz, usable);
  ASSERT_NE(grown, nullptr);
  EXPECT_EQ(isotest::first_pattern_mismatch(grown, 100, 1), 100u);
  free(grown);  // owned by t3's (now pooled) shard: a remote free from here
  free(b);
}

TEST(FirstCallIsFree, FirstFreeOfAChunkOwnedByThePooledShardItThenBinds) {
  // Thread A allocates and exits: its shard goes to the pool with the chunks still live. The
  // next thread's first call frees one of them: binding takes a pooled shard - A's, the most
  // recently pooled - so the freeing thread now owns the chunk and frees it locally.
  constexpr int kCount = 500;
  std::vector<void*> blocks(kCount);
  std::uint64_t owner_in_use = 0;
  std::thread a([&] {
    isotest::own_zones_from_now();
    for (void*& p : blocks) {
      p = malloc(opaque(std::size_t{64}));
      std::memset(p, 0x66, 64);
    }
    owner_in_use = iso_verify();
  });
  a.join();
  std::uint64_t after_first = 0, after_all = 0;
  bool same_shard = false;
  std::thread t([&] {
    free(blocks[0]);  // first call
    after_first = iso_verify();
    same_shard = after_first + 1 == owner_in_use;
    for (int i = 1; i < kCount; ++i) free(blocks[i]);
    iso_flush();
    after_all = iso_verify();
  });
  t.join();
  ASSERT_TRUE(same_shard) << "binding did not take the most recently pooled shard ("
                          << owner_in_use << " chunks in use at A's exit, " << after_first
                          << " after the first free)";
  EXPECT_EQ(after_all + kCount, owner_in_use);
}

}  // namespace
