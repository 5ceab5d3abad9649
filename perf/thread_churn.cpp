// Thread churn: thousands of short-lived threads, a few at a time, each doing a
// few hundred mallocs/frees and leaving some chunks behind for a later thread
// to free. An allocator that leaks per-thread state (caches, shards, metadata)
// on thread exit shows up as peak RSS growing with the thread count: compare
// `thread_churn 1000` with `thread_churn 4000`. With more live chunks per thread (a worker
// that holds a request's buffers), each thread's memory outgrows what a pool of spare
// per-thread state keeps cheaply: `thread_churn 2000 1 1000 1000` shows what an exited
// thread's state costs the next one.
//
// usage: thread_churn [threads=4000] [concurrency=8] [ops per thread=300] [live chunks=32]
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <thread>
#include <vector>

#include "bench_util.hpp"

namespace {

constexpr size_t kHandedOff = 8;    // of a thread's live chunks, left behind for later threads
constexpr size_t kPoolSlots = 256;  // shared hand-off pool

std::atomic<void*> pool[kPoolSlots];

void worker(long ops, size_t live_count, uint64_t seed) {
  bench::Rng rng(seed);
  std::vector<void*> live(live_count);
  for (auto& p : live) p = bench::alloc_tagged(rng.between(16, 4096));
  for (long i = 0; i < ops; i++) {
    size_t k = rng.next() % live_count;
    bench::free_tagged(live[k]);
    live[k] = bench::alloc_tagged(rng.between(16, 4096));
  }
  // Leave a few chunks in the pool; whatever they displace was allocated by an
  // earlier (usually already exited) thread.
  for (size_t k = 0; k < kHandedOff; k++) {
    void* old = pool[rng.next() % kPoolSlots].exchange(live[k], std::memory_order_acq_rel);
    if (old) bench::free_tagged(old);
  }
  for (size_t k = kHandedOff; k < live_count; k++) bench::free_tagged(live[k]);
}

}  // namespace

int main(int argc, char** argv) {
  const long total = bench::arg_or(argc, argv, 1, 4000);
  const long concurrency = bench::arg_or(argc, argv, 2, 8);
  const long ops = bench::arg_or(argc, argv, 3, 300);
  const long live_count = bench::arg_or(argc, argv, 4, 32);
  if (live_count < static_cast<long>(kHandedOff)) {
    std::fprintf(stderr, "thread_churn: live chunks must be at least %zu\n", kHandedOff);
    return 2;
  }

  const double start = bench::now_seconds();
  std::deque<std::thread> running;
  for (long t = 0; t < total; t++) {
    // Join the oldest before starting another: at most `concurrency` alive.
    if (static_cast<long>(running.size()) == concurrency) {
      running.front().join();
      running.pop_front();
    }
    running.emplace_back(worker, ops, static_cast<size_t>(live_count),
                         static_cast<uint64_t>(t + 1));
  }
  for (auto& t : running) t.join();
  const double elapsed = bench::now_seconds() - start;

  for (auto& slot : pool)
    if (void* p = slot.exchange(nullptr)) bench::free_tagged(p);

  std::printf("thread_churn: %ld threads, %ld at a time, %ld ops and %ld live chunks each "
              "in %.3f s (peak RSS %ld KiB)\n",
              total, concurrency, ops, live_count, elapsed, bench::peak_rss_kib());
  return 0;
}
