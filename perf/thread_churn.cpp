// Thread churn: thousands of short-lived threads, a few at a time, each doing a
// few hundred mallocs/frees and leaving some chunks behind for a later thread
// to free. An allocator that leaks per-thread state (caches, shards, metadata)
// on thread exit shows up as peak RSS growing with the thread count: compare
// `thread_churn 1000` with `thread_churn 4000`.
//
// usage: thread_churn [threads=4000] [concurrency=8] [ops per thread=300]
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <thread>

#include "bench_util.hpp"

namespace {

constexpr size_t kLocalLive = 32;   // chunks a thread keeps live while it works
constexpr size_t kHandedOff = 8;    // of those, left behind for later threads
constexpr size_t kPoolSlots = 256;  // shared hand-off pool

std::atomic<void*> pool[kPoolSlots];

void worker(long ops, uint64_t seed) {
  bench::Rng rng(seed);
  void* live[kLocalLive];
  for (auto& p : live) p = bench::alloc_tagged(rng.between(16, 4096));
  for (long i = 0; i < ops; i++) {
    size_t k = rng.next() % kLocalLive;
    bench::free_tagged(live[k]);
    live[k] = bench::alloc_tagged(rng.between(16, 4096));
  }
  // Leave a few chunks in the pool; whatever they displace was allocated by an
  // earlier (usually already exited) thread.
  for (size_t k = 0; k < kHandedOff; k++) {
    void* old = pool[rng.next() % kPoolSlots].exchange(live[k], std::memory_order_acq_rel);
    if (old) bench::free_tagged(old);
  }
  for (size_t k = kHandedOff; k < kLocalLive; k++) bench::free_tagged(live[k]);
}

}  // namespace

int main(int argc, char** argv) {
  const long total = bench::arg_or(argc, argv, 1, 4000);
  const long concurrency = bench::arg_or(argc, argv, 2, 8);
  const long ops = bench::arg_or(argc, argv, 3, 300);

  const double start = bench::now_seconds();
  std::deque<std::thread> running;
  for (long t = 0; t < total; t++) {
    // Join the oldest before starting another: at most `concurrency` alive.
    if (static_cast<long>(running.size()) == concurrency) {
      running.front().join();
      running.pop_front();
    }
    running.emplace_back(worker, ops, static_cast<uint64_t>(t + 1));
  }
  for (auto& t : running) t.join();
  const double elapsed = bench::now_seconds() - start;

  for (auto& slot : pool)
    if (void* p = slot.exchange(nullptr)) bench::free_tagged(p);

  std::printf("thread_churn: %ld threads, %ld at a time, %ld ops each in %.3f s (peak RSS %ld KiB)\n",
              total, concurrency, ops, elapsed, bench::peak_rss_kib());
  return 0;
}
