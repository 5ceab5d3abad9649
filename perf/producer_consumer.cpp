// Producer/consumer: every chunk is freed by a different thread than the one
// that allocated it, and consumers never allocate. This is the pattern that
// strands memory in allocators with per-thread caches if remote frees are not
// handed back to the owner.
//
// usage: producer_consumer [producers=2] [consumers=2] [items=4000000] [placement=any]
// One op = one malloc (producer) + one free (consumer).
//
// placement pins the threads (CPU numbers modulo the CPUs the process may use):
//   any     the scheduler decides (the default, and what bench.sh runs)
//   paired  consumer c on CPU c, each producer on its consumer's CPU: chunks never cross cores
//   crossed consumer c on CPU c, each producer on the next CPU: every chunk crosses cores
//   split   producers on the first CPU, consumers on the second
// With more threads than cores the scheduler's placement decides which of these a run is
// closest to, and they differ by 1.5x and more: the pinned modes show each one alone. Every
// run prints how much of it each producer spent on its consumer's CPU and how much of it the
// threads were spread evenly over the CPUs (cpu_trace.hpp), so unpinned runs can be sorted
// by the placement they got (scripts/pc_states.py does). The threads start together, once
// all are created and pinned, and the clock with them (start_gate.hpp says why).
//
// Each producer hands its chunks to one consumer through its own single-producer,
// single-consumer ring (consumer c serves producers c, c + C, ...). The hand-off costs a
// store and a load per chunk, so the allocator, not the harness, dominates the profile: an
// MPMC ring with semaphores spent 75% of the time in the harness. A waiting thread spins
// briefly, then yields (never sleeps a fixed time: with more threads than cores, fixed sleeps
// made the wall time follow the sleep granularity, and runs of one allocator swung by 3x
// with the cores mostly idle).
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "cpu_trace.hpp"
#include "start_gate.hpp"

namespace {

constexpr size_t kRingSlots = 1024;

class SpscRing {
 public:
  bool try_push(void* v) {
    size_t h = head_.load(std::memory_order_relaxed);
    if (h - tail_cache_ == kRingSlots) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (h - tail_cache_ == kRingSlots) return false;
    }
    slots_[h % kRingSlots] = v;
    head_.store(h + 1, std::memory_order_release);
    return true;
  }

  bool try_pop(void*& v) {
    size_t t = tail_.load(std::memory_order_relaxed);
    if (t == head_cache_) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (t == head_cache_) return false;
    }
    v = slots_[t % kRingSlots];
    tail_.store(t + 1, std::memory_order_release);
    return true;
  }

 private:
  alignas(64) std::atomic<size_t> head_{0};
  size_t tail_cache_ = 0;  // producer's view of tail_
  alignas(64) std::atomic<size_t> tail_{0};
  size_t head_cache_ = 0;  // consumer's view of head_
  alignas(64) void* slots_[kRingSlots];
};

void wait_a_little(unsigned& misses, bench::CpuTrace* trace) {
  trace->tick();
  if (++misses < 64) __builtin_ia32_pause();
  else std::this_thread::yield();
}

void produce(SpscRing* ring, long items, uint64_t seed, bench::StartGate* gate,
             bench::CpuTrace* trace) {
  gate->pass();
  trace->start();
  bench::Rng rng(seed);
  for (long i = 0; i < items; i++) {
    void* chunk = bench::alloc_tagged(rng.between(16, 4096));
    for (unsigned misses = 0; !ring->try_push(chunk);) wait_a_little(misses, trace);
    trace->tick();
  }
  for (unsigned misses = 0; !ring->try_push(nullptr);) wait_a_little(misses, trace);  // done
}

// Serves its rings round-robin until every one of them has delivered its end marker.
void consume(std::vector<SpscRing*> rings, bench::StartGate* gate, bench::CpuTrace* trace) {
  gate->pass();
  trace->start();
  size_t open = rings.size();
  std::vector<bool> done(rings.size());
  unsigned misses = 0;
  while (open > 0) {
    bool got = false;
    for (size_t r = 0; r < rings.size(); r++) {
      void* chunk;
      // Up to a ring's worth at a time: one producer does not starve the others.
      for (size_t n = 0; n < kRingSlots && !done[r] && rings[r]->try_pop(chunk); n++) {
        got = true;
        trace->tick();
        if (chunk) {
          bench::free_tagged(chunk);
        } else {
          done[r] = true;
          open--;
        }
      }
    }
    if (got) misses = 0;
    else wait_a_little(misses, trace);
  }
}

using Traces = std::vector<std::unique_ptr<bench::CpuTrace>>;

void print_placement(const Traces& producer_cpus, const Traces& consumer_cpus, double end) {
  double beside = 0;
  std::vector<const bench::CpuTrace*> all;
  for (size_t p = 0; p < producer_cpus.size(); p++) {
    double share = producer_cpus[p]->share_beside(*consumer_cpus[p % consumer_cpus.size()], end);
    if (share < 0) {
      std::printf("placement: unknown (a thread moved too often to trace)\n");
      return;
    }
    beside += share;
    all.push_back(producer_cpus[p].get());
  }
  for (auto& c : consumer_cpus) all.push_back(c.get());
  cpu_set_t allowed;
  int cpus = sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
  double even = bench::CpuTrace::share_spread_evenly(all, cpus, end);
  std::printf("placement: producer beside its consumer %.0f%% of the run, threads spread evenly "
              "over the %d CPUs %.0f%%\n",
              100 * beside / static_cast<double>(producer_cpus.size()), cpus, 100 * even);
}

enum class Placement { kAny, kPaired, kCrossed, kSplit };

Placement placement_arg(int argc, char** argv) {
  if (argc <= 4 || std::strcmp(argv[4], "any") == 0) return Placement::kAny;
  if (std::strcmp(argv[4], "paired") == 0) return Placement::kPaired;
  if (std::strcmp(argv[4], "crossed") == 0) return Placement::kCrossed;
  if (std::strcmp(argv[4], "split") == 0) return Placement::kSplit;
  std::fprintf(stderr, "bad placement '%s' (want any, paired, crossed or split)\n", argv[4]);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  const long producers = bench::arg_or(argc, argv, 1, 2);
  const long consumers = bench::arg_or(argc, argv, 2, 2);
  const long items = bench::arg_or(argc, argv, 3, 4000000);
  const Placement placement = placement_arg(argc, argv);

  // Before the clock: the rings' memory is the harness's, not the workload's.
  std::vector<std::unique_ptr<SpscRing>> rings;
  for (long p = 0; p < producers; p++) rings.push_back(std::make_unique<SpscRing>());
  std::vector<std::vector<SpscRing*>> served(static_cast<size_t>(consumers));
  for (long p = 0; p < producers; p++) served[p % consumers].push_back(rings[p].get());
  Traces producer_cpus, consumer_cpus;
  for (long p = 0; p < producers; p++) producer_cpus.push_back(std::make_unique<bench::CpuTrace>());
  for (long c = 0; c < consumers; c++) consumer_cpus.push_back(std::make_unique<bench::CpuTrace>());

  bench::StartGate gate(producers + consumers);
  std::vector<std::thread> consumer_threads, producer_threads;
  for (long c = 0; c < consumers; c++) {
    consumer_threads.emplace_back(consume, served[c], &gate, consumer_cpus[c].get());
    if (placement == Placement::kSplit) bench::pin_to_cpu(consumer_threads.back().native_handle(), 1);
    else if (placement != Placement::kAny) bench::pin_to_cpu(consumer_threads.back().native_handle(), c);
  }
  for (long p = 0; p < producers; p++) {
    // Spread the remainder so exactly `items` chunks are produced.
    long share = items / producers + (p < items % producers ? 1 : 0);
    producer_threads.emplace_back(produce, rings[p].get(), share, static_cast<uint64_t>(p + 1),
                                  &gate, producer_cpus[p].get());
    if (placement == Placement::kSplit) bench::pin_to_cpu(producer_threads.back().native_handle(), 0);
    else if (placement == Placement::kPaired) bench::pin_to_cpu(producer_threads.back().native_handle(), p % consumers);
    else if (placement == Placement::kCrossed) bench::pin_to_cpu(producer_threads.back().native_handle(), p % consumers + 1);
  }
  const double start = gate.open();
  for (auto& t : producer_threads) t.join();
  for (auto& t : consumer_threads) t.join();
  const double end = bench::now_seconds();
  const double elapsed = end - start;

  std::printf("producer_consumer: %ld producers, %ld consumers, %ld items in %.4f s: %.0f ops/s\n",
              producers, consumers, items, elapsed, static_cast<double>(items) / elapsed);
  bench::print_peak_rss();
  print_placement(producer_cpus, consumer_cpus, end);
  return 0;
}
