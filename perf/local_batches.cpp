// Thread-local batches: every thread allocates a batch of random-size chunks and frees
// them in a scrambled order, again and again. No chunk crosses threads, so this is the
// per-thread fast path alone, and how its throughput grows with the thread count shows
// whether threads contend inside the allocator (locks, shared counters, false sharing).
//
// usage: local_batches [threads=2] [rounds per thread=20000] [batch=256]
// One op = one malloc + one free.
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "start_gate.hpp"

namespace {

constexpr size_t kMinSize = 16;
constexpr size_t kMaxSize = 1024;

void work(long rounds, size_t batch, uint64_t seed, bench::StartGate* gate) {
  bench::Rng rng(seed);
  std::vector<void*> live(batch);
  gate->pass();
  // A stride coprime with the batch size visits every chunk once, out of order.
  size_t stride = batch / 2 + 1;
  while (std::gcd(stride, batch) != 1) stride++;
  for (long r = 0; r < rounds; r++) {
    for (auto& p : live) p = bench::alloc_tagged(rng.between(kMinSize, kMaxSize));
    for (size_t i = 0, k = rng.next() % batch; i < batch; i++, k = (k + stride) % batch)
      bench::free_tagged(live[k]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long threads = bench::arg_or(argc, argv, 1, 2);
  const long rounds = bench::arg_or(argc, argv, 2, 20000);
  const auto batch = static_cast<size_t>(bench::arg_or(argc, argv, 3, 256));

  // The threads start together once all exist, and the clock with them (start_gate.hpp).
  bench::StartGate gate(threads);
  std::vector<std::thread> workers;
  for (long t = 0; t < threads; t++)
    workers.emplace_back(work, rounds, batch, static_cast<uint64_t>(t + 1), &gate);
  const double start = gate.open();
  for (auto& w : workers) w.join();
  const double elapsed = bench::now_seconds() - start;

  const double ops = static_cast<double>(threads) * static_cast<double>(rounds) *
                     static_cast<double>(batch);
  std::printf("local_batches: %ld threads x %ld rounds of %zu in %.3f s: %.0f ops/s\n", threads,
              rounds, batch, elapsed, ops / elapsed);
  bench::print_peak_rss();
  return 0;
}
