// Producer/consumer: every chunk is freed by a different thread than the one
// that allocated it, and consumers never allocate. This is the pattern that
// strands memory in allocators with per-thread caches if remote frees are not
// handed back to the owner.
//
// usage: producer_consumer [producers=2] [consumers=2] [items=4000000]
// One op = one malloc (producer) + one free (consumer).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

#include "bench_util.hpp"

namespace {

// Bounded MPMC ring (Vyukov's sequence-number scheme): lock-free, so the
// allocator rather than a mutex dominates the profile.
template <size_t Capacity>
class Ring {
  static_assert((Capacity & (Capacity - 1)) == 0, "capacity must be a power of two");

 public:
  Ring() {
    for (size_t i = 0; i < Capacity; i++) cells_[i].seq.store(i, std::memory_order_relaxed);
  }

  bool try_push(void* value) {
    size_t pos = head_.load(std::memory_order_relaxed);
    for (;;) {
      Cell& cell = cells_[pos & (Capacity - 1)];
      auto diff = static_cast<intptr_t>(cell.seq.load(std::memory_order_acquire)) -
                  static_cast<intptr_t>(pos);
      if (diff == 0) {
        if (head_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          cell.value = value;
          cell.seq.store(pos + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;  // full
      } else {
        pos = head_.load(std::memory_order_relaxed);
      }
    }
  }

  bool try_pop(void*& value) {
    size_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      Cell& cell = cells_[pos & (Capacity - 1)];
      auto diff = static_cast<intptr_t>(cell.seq.load(std::memory_order_acquire)) -
                  static_cast<intptr_t>(pos + 1);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          value = cell.value;
          cell.seq.store(pos + Capacity, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;  // empty
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
  }

 private:
  struct Cell {
    std::atomic<size_t> seq;
    void* value;
  };
  alignas(64) Cell cells_[Capacity];
  alignas(64) std::atomic<size_t> head_{0};
  alignas(64) std::atomic<size_t> tail_{0};
};

// Spin briefly, yield a little, then sleep: with more threads than cores (the
// default 2+2 on a 2-core box) pure spinning lets a waiting thread burn the
// slice the thread it waits for needs, and run times swing by 2x.
void backoff(unsigned& misses) {
  ++misses;
  if (misses < 64) return;
  if (misses < 80) {
    std::this_thread::yield();
    return;
  }
  std::this_thread::sleep_for(std::chrono::microseconds(50));
}

Ring<1024> ring;

void push(void* chunk) {
  unsigned misses = 0;
  while (!ring.try_push(chunk)) backoff(misses);
}

void produce(long items, uint64_t seed) {
  bench::Rng rng(seed);
  for (long i = 0; i < items; i++) {
    push(bench::alloc_tagged(rng.between(16, 4096)));
  }
}

// Runs until it pops the nullptr that main pushes once all producers are done.
void consume() {
  unsigned misses = 0;
  for (;;) {
    void* chunk;
    if (!ring.try_pop(chunk)) {
      backoff(misses);
      continue;
    }
    misses = 0;
    if (!chunk) return;
    bench::free_tagged(chunk);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long producers = bench::arg_or(argc, argv, 1, 2);
  const long consumers = bench::arg_or(argc, argv, 2, 2);
  const long items = bench::arg_or(argc, argv, 3, 4000000);

  const double start = bench::now_seconds();
  std::vector<std::thread> consumer_threads, producer_threads;
  for (long c = 0; c < consumers; c++) consumer_threads.emplace_back(consume);
  for (long p = 0; p < producers; p++) {
    // Spread the remainder so exactly `items` chunks are produced.
    long share = items / producers + (p < items % producers ? 1 : 0);
    producer_threads.emplace_back(produce, share, static_cast<uint64_t>(p + 1));
  }
  for (auto& t : producer_threads) t.join();
  for (long c = 0; c < consumers; c++) push(nullptr);  // one stop marker each
  for (auto& t : consumer_threads) t.join();
  const double elapsed = bench::now_seconds() - start;

  std::printf("producer_consumer: %ld producers, %ld consumers, %ld items in %.3f s: %.0f ops/s\n",
              producers, consumers, items, elapsed, static_cast<double>(items) / elapsed);
  return 0;
}
