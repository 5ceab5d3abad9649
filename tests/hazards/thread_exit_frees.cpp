// Hazard: allocator calls during thread exit. C++ thread_local destructors and pthread key
// destructors run while the thread is being torn down; isoshard releases the thread's shard
// to a pool from its own key destructor (in the last destructor round). Frees and
// allocations made by other destructors around that point must work, must not lose chunks,
// and must not leave a shard bound to a dead thread: over many threads the shard count has
// to stay bounded by the number of threads alive at once, and new threads must reuse the
// pooled shards (and their zones).
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#include <atomic>
#include <thread>
#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "api/isoshard.h"
#include "tests/api/test_support.hpp"

namespace {

using isotest::escape;
using isotest::opaque;
using isotest::RawThread;

constexpr int kLiveThreads = 4;  // threads alive at once in every test here
constexpr int kRounds = 50;      // so kLiveThreads * kRounds = 200 threads per test

iso_stats stats() {
  iso_stats s{};
  iso_get_stats(&s);
  return s;
}

// Over a stream of threads with at most kLiveThreads alive at once: at most kLiveThreads new
// shards, and every shard created meanwhile is back in the pool once they have all exited
// (none left bound to a dead thread, none lost from the pool).
void expect_shards_reused(const iso_stats& before, const iso_stats& after) {
  EXPECT_LE(after.shards - before.shards, static_cast<std::uint32_t>(kLiveThreads))
      << "shards grew with thread churn: " << before.shards << " -> " << after.shards;
  EXPECT_EQ(after.shards_pooled, before.shards_pooled + (after.shards - before.shards))
      << "shards of exited threads are not back in the pool (pooled " << before.shards_pooled
      << " -> " << after.shards_pooled << ", shards " << before.shards << " -> " << after.shards
      << ")";
  EXPECT_GE(after.shards_pooled, 1u);
}

// Runs `rounds` rounds of kLiveThreads raw pthreads running body(thread_index), joining each
// round before the next starts, so never more than kLiveThreads are alive.
template <class Body>
void run_rounds(int rounds, Body body) {
  struct Call {
    Body* body;
    int index;
    void operator()() { (*body)(index); }
  };
  for (int r = 0; r < rounds; ++r) {
    Call calls[kLiveThreads];
    for (int i = 0; i < kLiveThreads; ++i) calls[i] = Call{&body, r * kLiveThreads + i};
    RawThread<Call> t0(calls[0]), t1(calls[1]), t2(calls[2]), t3(calls[3]);
    static_assert(kLiveThreads == 4);
    ASSERT_TRUE(t0.started() && t1.started() && t2.started() && t3.started());
  }
}

// --- thread_local destructors that free -------------------------------------------------------

std::atomic<std::uint64_t> g_tls_freed{0};
std::atomic<std::uint64_t> g_tls_corrupt{0};

struct ForeignBlocks {
  std::vector<void*> blocks;  // owned by the main thread
  ~ForeignBlocks() {
    for (void* p : blocks) {
      if (static_cast<unsigned char*>(p)[0] != 0x7e) g_tls_corrupt.fetch_add(1);
      free(p);
    }
    g_tls_freed.fetch_add(blocks.size());
    // A destructor may also allocate: a scratch buffer made and dropped during teardown.
    void* scratch = malloc(opaque(std::size_t{3000}));
    if (scratch) std::memset(scratch, 1, 3000);
    escape(scratch);
    free(scratch);
  }
};
thread_local ForeignBlocks t_foreign;

TEST(ThreadExit, ThreadLocalDestructorFreesAnotherThreadsMemory) {
  // An owner thread allocates the blocks and waits (not the main thread: its zones also hold
  // what glibc allocates for each new thread). Each of 200 short-lived threads takes 150 of
  // them into a thread_local whose destructor frees them at thread exit.
  constexpr int kPerThread = 150;
  const int total_threads = kRounds * kLiveThreads;
  const std::uint64_t total_blocks = std::uint64_t{kPerThread} * total_threads;
  std::vector<void*> blocks(total_blocks);
  isotest::Event allocated, threads_done;
  iso_stats owner_before{}, owner_after{};
  std::uint64_t in_use_before = 0, in_use_after = 0;
  std::thread owner([&] {
    isotest::own_zones_from_now();
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      blocks[i] = malloc(opaque(std::size_t{16} + 8 * (i % 50)));
      if (blocks[i]) static_cast<unsigned char*>(blocks[i])[0] = 0x7e;
    }
    owner_before = stats();
    in_use_before = iso_verify();
    allocated.set();
    threads_done.wait();
    iso_flush();
    owner_after = stats();
    in_use_after = iso_verify();
  });
  allocated.wait();
  for (void* p : blocks) ASSERT_NE(p, nullptr);
  g_tls_freed = 0;
  g_tls_corrupt = 0;

  run_rounds(1, [](int) {});  // warm up: the pool holds shards before we measure
  const iso_stats before = stats();
  run_rounds(kRounds, [&](int index) {
    // The vector's buffer is this thread's; the blocks are the owner's.
    t_foreign.blocks.assign(blocks.begin() + std::ptrdiff_t{index} * kPerThread,
                            blocks.begin() + std::ptrdiff_t{index + 1} * kPerThread);
  });
  const iso_stats after = stats();
  threads_done.set();
  owner.join();

  EXPECT_EQ(g_tls_freed.load(), total_blocks);
  EXPECT_EQ(g_tls_corrupt.load(), 0u);
  EXPECT_EQ(owner_after.remote_frees_received - owner_before.remote_frees_received, total_blocks)
      << "frees made by thread_local destructors did not all reach the owner";
  EXPECT_EQ(in_use_before - in_use_after, total_blocks)
      << "the owner still counts chunks freed by exited threads as in use";
  expect_shards_reused(before, after);
}

// --- pthread key destructors that allocate and free --------------------------------------

pthread_key_t g_key;
std::atomic<std::uint64_t> g_dtor_calls{0};
std::atomic<std::uint64_t> g_dtor_bad{0};

struct KeyValue {
  int round;       // destructor round this value is for
  std::uint64_t check;
  char payload[200];
};

// Blocks allocated in the last destructor round (after isoshard released the thread's shard)
// and kept past the thread's end, each stamped with its index: the main thread checks that
// none was handed out twice and frees them.
constexpr std::size_t kMaxKept = 4096;
std::atomic<std::size_t> g_kept_count{0};
void* g_kept[kMaxKept];

// Frees the value, does a malloc/free of its own, and re-arms itself with a fresh value for
// every round glibc runs (PTHREAD_DESTRUCTOR_ITERATIONS): so it also runs in the last round,
// after isoshard's own key destructor has released the thread's shard.
void key_destructor(void* v) {
  auto* kv = static_cast<KeyValue*>(v);
  g_dtor_calls.fetch_add(1);
  if (kv->check != 0x600dull * (kv->round + 1)) g_dtor_bad.fetch_add(1);
  int round = kv->round;
  free(kv);
  void* scratch = malloc(opaque(std::size_t{500}));
  if (!scratch) g_dtor_bad.fetch_add(1);
  else std::memset(scratch, 0x5e, 500);
  escape(scratch);
  free(scratch);
  if (round + 1 == PTHREAD_DESTRUCTOR_ITERATIONS) {
    std::size_t i = g_kept_count.fetch_add(1);
    if (i < kMaxKept) {
      auto* keep = static_cast<std::uint64_t*>(malloc(opaque(std::size_t{64})));
      if (!keep) {
        g_dtor_bad.fetch_add(1);
      } else {
        for (int w = 0; w < 8; ++w) keep[w] = i;
      }
      g_kept[i] = keep;
    }
  }
  if (round + 1 < PTHREAD_DESTRUCTOR_ITERATIONS) {
    auto* next = static_cast<KeyValue*>(malloc(sizeof(KeyValue)));
    if (!next) {
      g_dtor_bad.fetch_add(1);
      return;
    }
    next->round = round + 1;
    next->check = 0x600dull * (round + 2);
    pthread_setspecific(g_key, next);
  }
}

class ThreadExitKeys : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(pthread_key_create(&g_key, key_destructor), 0);
    g_dtor_calls = 0;
    g_dtor_bad = 0;
    g_kept_count = 0;
  }
  void TearDown() override { pthread_key_delete(g_key); }
};

TEST_F(ThreadExitKeys, KeyDestructorThatAllocatesInEveryRoundLeavesNoShardBehind) {
  // Warm up: let the pool hold kLiveThreads shards.
  auto body = [](int) {
    isotest::own_zones_from_now();  // bound: the last round runs after its shard's release
    auto* kv = static_cast<KeyValue*>(malloc(sizeof(KeyValue)));
    kv->round = 0;
    kv->check = 0x600dull;
    std::memset(kv->payload, 1, sizeof kv->payload);
    pthread_setspecific(g_key, kv);
  };
  run_rounds(2, body);
  const iso_stats before = stats();
  run_rounds(kRounds, body);
  const iso_stats after = stats();

  const std::uint64_t threads = std::uint64_t{kRounds + 2} * kLiveThreads;
  EXPECT_EQ(g_dtor_calls.load(), threads * PTHREAD_DESTRUCTOR_ITERATIONS)
      << "the key destructor did not run in every round";
  EXPECT_EQ(g_dtor_bad.load(), 0u);
  // The last round's malloc ran after isoshard released the thread's shard; if that bound a
  // shard that nothing releases, every thread leaks one.
  expect_shards_reused(before, after);

  // What those last-round mallocs returned is real, distinct memory that outlives the thread
  // and can be freed from here.
  const std::size_t kept = g_kept_count.load();
  ASSERT_EQ(kept, threads);
  std::set<void*> distinct;
  std::size_t clobbered = 0;
  for (std::size_t i = 0; i < kept; ++i) {
    auto* words = static_cast<std::uint64_t*>(g_kept[i]);
    ASSERT_NE(words, nullptr);
    distinct.insert(words);
    for (int w = 0; w < 8; ++w) clobbered += words[w] != i;
  }
  EXPECT_EQ(distinct.size(), kept) << "a chunk was handed to two exiting threads";
  EXPECT_EQ(clobbered, 0u);
  for (std::size_t i = 0; i < kept; ++i) free(g_kept[i]);
  iso_flush();
  iso_verify();
}

TEST_F(ThreadExitKeys, KeyDestructorThatAllocatesOnceIsServedAndReleased) {
  // The common case: a destructor that runs in the first round only (no re-arming).
  static std::atomic<int> once_calls{0};
  once_calls = 0;
  pthread_key_t once;
  ASSERT_EQ(pthread_key_create(&once,
                               [](void* v) {
                                 free(v);
                                 void* p = malloc(opaque(std::size_t{64}));
                                 std::memset(p, 2, 64);
                                 escape(p);
                                 free(p);
                                 once_calls.fetch_add(1);
                               }),
            0);
  auto body = [&once](int) {
    isotest::own_zones_from_now();  // bound: the destructor runs after its shard's release
    pthread_setspecific(once, malloc(opaque(std::size_t{100})));
  };
  run_rounds(2, body);
  const iso_stats before = stats();
  run_rounds(kRounds, body);
  const iso_stats after = stats();
  pthread_key_delete(once);
  EXPECT_EQ(once_calls.load(), (kRounds + 2) * kLiveThreads);
  expect_shards_reused(before, after);
}

TEST(ThreadExit, ChurningThreadsReusePooledShardsAndTheirZones) {
  // Threads that allocate, keep some memory for others to free, and exit. After a warm-up,
  // a steady stream of such threads must create neither shards nor zones: the pool hands
  // over whole shards, zones included.
  std::vector<void*> leftovers;
  std::atomic<std::uint64_t> bad{0};
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  auto body = [&](int index) {
    isotest::XorShift rng(index + 1);
    void* keep[32];
    for (int i = 0; i < 2000; ++i) {
      std::size_t n = 1 + rng.below(3000);
      auto* p = static_cast<unsigned char*>(malloc(opaque(n)));
      if (!p) {
        bad.fetch_add(1);
        continue;
      }
      p[0] = p[n - 1] = 0x11;
      if (i < 32) keep[i] = p;
      else free(p);
    }
    pthread_mutex_lock(&m);
    leftovers.insert(leftovers.end(), keep, keep + 32);
    pthread_mutex_unlock(&m);
  };
  leftovers.reserve(32 * kLiveThreads * (kRounds + 8));
  // Warm-up with all kLiveThreads alive at once (a barrier holds them), so the pool ends up
  // with that many shards, each with zones for the sizes used.
  pthread_barrier_t all_alive;
  ASSERT_EQ(pthread_barrier_init(&all_alive, nullptr, kLiveThreads), 0);
  run_rounds(1, [&](int index) {
    body(index);
    pthread_barrier_wait(&all_alive);
  });
  pthread_barrier_destroy(&all_alive);
  run_rounds(3, body);
  const iso_stats warm = stats();
  run_rounds(kRounds, body);
  const iso_stats after = stats();
  // The exited threads' kept blocks are freed here: remote frees to pooled shards.
  for (void* p : leftovers) free(p);
  iso_flush();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(after.shards, warm.shards) << "new shards despite a pool of " << warm.shards_pooled;
  expect_shards_reused(warm, after);
  // The common shard's zones are not the pool's: a thread that lands on a stripe whose
  // zones an earlier test shaped makes the classes it lacks (on 16 CPUs, 26 zones here).
  EXPECT_LE((after.zones - after.common_zones) - (warm.zones - warm.common_zones), 8u)
      << "pooled shards' zones were not reused";
  // A second stream picks up the pooled shards whose inboxes now hold those frees.
  run_rounds(4, body);
  EXPECT_EQ(bad.load(), 0u);
  iso_verify();
}

}  // namespace
