// Larson-style server simulation: threads share one array of slots and keep
// replacing a random slot's object with a fresh one, so most frees hit memory
// another thread allocated. A fixed number of rounds per thread (not a fixed
// wall time) keeps the work constant, so hyperfine can time it.
//
// usage: larson [threads=2] [rounds per thread=5000000] [slots=8192]
// One op = one free + one malloc.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "start_gate.hpp"

namespace {

constexpr size_t kMinSize = 16;
constexpr size_t kMaxSize = 1024;

void serve(std::atomic<void*>* slots, size_t slot_count, long rounds, uint64_t seed,
           bench::StartGate* gate) {
  gate->pass();
  bench::Rng rng(seed);
  for (long r = 0; r < rounds; r++) {
    void* fresh = bench::alloc_tagged(rng.between(kMinSize, kMaxSize));
    // exchange hands this thread sole ownership of the old object.
    void* old = slots[rng.next() % slot_count].exchange(fresh, std::memory_order_acq_rel);
    bench::free_tagged(old);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long threads = bench::arg_or(argc, argv, 1, 2);
  const long rounds = bench::arg_or(argc, argv, 2, 5000000);
  const auto slot_count = static_cast<size_t>(bench::arg_or(argc, argv, 3, 8192));

  // Filled by the main thread, so the workers' first frees are all remote.
  auto slots = std::make_unique<std::atomic<void*>[]>(slot_count);
  bench::Rng fill_rng(0);
  for (size_t i = 0; i < slot_count; i++)
    slots[i].store(bench::alloc_tagged(fill_rng.between(kMinSize, kMaxSize)));

  // The threads start together once all exist, and the clock with them (start_gate.hpp).
  bench::StartGate gate(threads);
  std::vector<std::thread> workers;
  for (long t = 0; t < threads; t++)
    workers.emplace_back(serve, slots.get(), slot_count, rounds, static_cast<uint64_t>(t + 1),
                         &gate);
  const double start = gate.open();
  for (auto& w : workers) w.join();
  const double elapsed = bench::now_seconds() - start;

  for (size_t i = 0; i < slot_count; i++) bench::free_tagged(slots[i].load());

  const double ops = static_cast<double>(threads) * static_cast<double>(rounds);
  std::printf("larson: %ld threads x %ld rounds, %zu slots in %.3f s: %.0f ops/s\n", threads,
              rounds, slot_count, elapsed, ops / elapsed);
  bench::print_peak_rss();
  return 0;
}
