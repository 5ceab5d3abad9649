// Hazard: fork() while other threads are in the middle of allocating and freeing. The child
// has only the forking thread; every other thread's shard, with whatever it was doing, is
// inherited. isoshard takes its locks around fork and pools the vanished threads' shards in
// the child. The child must be able to allocate, free the parent's chunks, start threads of
// its own (which take over those pooled shards), pass chunks between them, and exit 0.
//
// The child reports through its exit status only (no gtest in the child); alarm() turns a
// deadlock in the child into a SIGALRM death the parent reports, instead of a hung test.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "api/isoshard.h"
#include "tests/api/test_support.hpp"

namespace {

using isotest::escape;
using isotest::opaque;
using isotest::XorShift;

constexpr int kWorkers = 4;
constexpr int kForks = 6;
constexpr int kShared = 256;

// Blocks passed between threads without locks (a lock held at fork time would stay held in
// the child): each slot holds a block whose first byte equals its stamp, or null.
std::atomic<void*> g_shared[kShared];

std::size_t block_size(XorShift& rng) {
  std::size_t r = rng.below(100);
  if (r < 80) return 16 + rng.below(500);
  if (r < 98) return 500 + rng.below(20000);
  return 40000 + rng.below(300000);  // big: takes the root lock, which fork must handle
}

void* make_block(XorShift& rng) {
  std::size_t n = block_size(rng);
  auto* p = static_cast<unsigned char*>(malloc(opaque(n)));
  if (!p) return nullptr;
  std::memset(p, 0xa5, n < 64 ? n : 64);
  p[n - 1] = 0xa5;
  return p;
}

bool block_ok(const void* p) { return static_cast<const unsigned char*>(p)[0] == 0xa5; }

// One step of churn: replace a private block and swap one through the shared slots (the
// displaced block, usually another thread's, is freed here: a cross-thread free).
// Returns false on a corrupted block or failed allocation.
bool churn_step(XorShift& rng, void** mine, int mine_count) {
  int k = static_cast<int>(rng.below(mine_count));
  if (mine[k]) {
    if (!block_ok(mine[k])) return false;
    free(mine[k]);
  }
  mine[k] = make_block(rng);
  if (!mine[k]) return false;
  void* fresh = make_block(rng);
  if (!fresh) return false;
  void* old = g_shared[rng.below(kShared)].exchange(fresh, std::memory_order_acq_rel);
  if (old) {
    if (!block_ok(old)) return false;
    free(old);
  }
  return true;
}

// What the child does. Returns its exit status: 0 when everything worked.
int child_main(std::uint64_t seed) {
  alarm(20);
  XorShift rng(seed);
  void* mine[64] = {};
  // The forking thread, first: allocate, free, and free blocks the parent's threads left in
  // the shared slots (owned by shards whose threads do not exist here).
  for (int i = 0; i < 2000; ++i)
    if (!churn_step(rng, mine, 64)) return 10;
  void* r = realloc(mine[0], opaque(std::size_t{100000}));
  if (!r) return 11;
  mine[0] = r;
  static_cast<unsigned char*>(r)[0] = 0xa5;

  // New threads: they bind the vanished threads' pooled shards.
  for (int wave = 0; wave < 2; ++wave) {
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kWorkers; ++t) {
      ts.emplace_back([&failures, t, wave, seed] {
        XorShift trng(seed * 31 + t + 100 * wave);
        void* own[32] = {};
        for (int i = 0; i < 3000; ++i) {
          if (!churn_step(trng, own, 32)) {
            failures.fetch_add(1);
            return;
          }
        }
        for (void* p : own) free(p);
        iso_flush();
        iso_verify();  // aborts (-> SIGABRT status) on a broken zone of this thread's shard
      });
    }
    for (auto& t : ts) t.join();
    if (failures.load() != 0) return 20 + wave;
  }
  for (void* p : mine) free(p);
  for (auto& slot : g_shared) {
    void* p = slot.exchange(nullptr);
    if (p && !block_ok(p)) return 30;
    free(p);
  }
  iso_flush();
  iso_verify();
  iso_stats s{};
  iso_get_stats(&s);
  if (s.shards < 1) return 40;
  return 0;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("killed by signal ") + strsignal(WTERMSIG(status)) +
           (WTERMSIG(status) == SIGALRM ? " (deadlocked?)" : "");
  return "status " + std::to_string(status);
}

// Starts kWorkers churning threads, runs `forker` while they run, then stops and checks them.
template <class Forker>
void with_busy_workers(Forker forker) {
  for (auto& slot : g_shared) slot.store(nullptr);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> steps{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      XorShift rng(w + 1);
      void* mine[64] = {};
      while (!stop.load(std::memory_order_relaxed)) {
        if (!churn_step(rng, mine, 64)) bad.fetch_add(1);
        steps.fetch_add(1, std::memory_order_relaxed);
      }
      for (void* p : mine) free(p);
    });
  }
  forker(steps);
  stop = true;
  for (auto& t : workers) t.join();
  EXPECT_EQ(bad.load(), 0) << "the parent's threads saw corrupted blocks";
  for (auto& slot : g_shared) free(slot.exchange(nullptr));
  iso_flush();
  iso_verify();
}

// Waits until the workers have made progress since the last fork, so every fork really
// happens while they are mid-churn (progress, not time, is what we wait for).
void await_progress(std::atomic<std::uint64_t>& steps, std::uint64_t& last) {
  while (steps.load(std::memory_order_relaxed) < last + 2000) std::this_thread::yield();
  last = steps.load(std::memory_order_relaxed);
}

TEST(ForkUnderThreads, ChildOfBusyProcessAllocatesOnNewThreadsAndExitsCleanly) {
  with_busy_workers([](std::atomic<std::uint64_t>& steps) {
    std::uint64_t last = 0;
    for (int i = 0; i < kForks; ++i) {
      await_progress(steps, last);
      pid_t pid = fork();
      ASSERT_GE(pid, 0) << "fork failed";
      if (pid == 0) _exit(child_main(1000 + i));
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "fork " << i << ": child " << describe(status);
    }
  });
}

TEST(ForkUnderThreads, ForkFromAWorkerThreadWhileMainAndOthersAllocate) {
  // The forking thread is not the main thread: in the child the main thread's shard (the
  // one made before main()) is the one left without a thread.
  with_busy_workers([](std::atomic<std::uint64_t>& steps) {
    std::uint64_t last = 0;
    for (int i = 0; i < kForks; ++i) {
      await_progress(steps, last);
      int status = -1;
      pid_t pid = -1;
      std::thread forker([&] {
        void* warm = malloc(opaque(std::size_t{32}));  // this thread has a shard of its own
        escape(warm);
        pid = fork();
        if (pid == 0) _exit(child_main(2000 + i));
        free(warm);
      });
      // Main keeps allocating while the other thread forks.
      std::vector<void*> tmp;
      for (int k = 0; k < 500; ++k) tmp.push_back(malloc(opaque(std::size_t{24} + k)));
      for (void* p : tmp) free(p);
      forker.join();
      ASSERT_GT(pid, 0) << "fork failed";
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "fork " << i << ": child " << describe(status);
    }
  });
}

TEST(ForkUnderThreads, ChildForksAgain) {
  // A grandchild inherits a heap that was itself inherited across fork.
  with_busy_workers([](std::atomic<std::uint64_t>& steps) {
    std::uint64_t last = 0;
    await_progress(steps, last);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      alarm(30);
      int rc = child_main(3000);
      if (rc != 0) _exit(rc);
      pid_t grandchild = fork();
      if (grandchild < 0) _exit(50);
      if (grandchild == 0) _exit(child_main(3001));
      int st = 0;
      if (waitpid(grandchild, &st, 0) != grandchild) _exit(51);
      _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 52);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << describe(status);
  });
}

// Zones of one class that empty out donate their resident pages to another class's zone
// when it grows (mremap). Workers here ping-pong two classes so that donations happen all
// the time, and forks land in the middle of them; in the child, new threads take over the
// workers' shards and use every chunk of both classes (a zone whose bookkeeping counts pages
// that were moved away would hand out chunks in an unmapped hole: SIGSEGV).
constexpr std::size_t kClassA = 16384, kClassB = 12288;
constexpr int kPingPongChunks = 24;

bool ping_pong_once(std::size_t bytes) {
  void* chunks[kPingPongChunks];
  for (void*& p : chunks) {
    p = malloc(opaque(bytes));
    if (!p) return false;
    std::memset(p, 0x3d, bytes);  // touches every page of every chunk
  }
  for (void* p : chunks) free(p);  // the zone empties: its pages become donations
  return true;
}

int donation_child_main() {
  alarm(20);
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kWorkers; ++t)
    ts.emplace_back([&failures] {
      for (int round = 0; round < 4; ++round)
        if (!ping_pong_once(kClassA) || !ping_pong_once(kClassB)) failures.fetch_add(1);
      iso_verify();
    });
  for (auto& t : ts) t.join();
  return failures.load() == 0 ? 0 : 60;
}

TEST(ForkUnderThreads, ForkWhileZonesDonatePagesAcrossClasses) {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> steps{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w)
    workers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        if (!ping_pong_once(kClassA) || !ping_pong_once(kClassB)) bad.fetch_add(1);
        steps.fetch_add(1, std::memory_order_relaxed);
      }
    });
  std::uint64_t last = 0;
  for (int i = 0; i < 2 * kForks; ++i) {
    while (steps.load(std::memory_order_relaxed) < last + 20) std::this_thread::yield();
    last = steps.load(std::memory_order_relaxed);
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << "fork failed";
    if (pid == 0) _exit(donation_child_main());
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "fork " << i << ": child " << describe(status);
  }
  stop = true;
  for (auto& t : workers) t.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
