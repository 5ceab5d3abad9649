// Cross-core round trip: two threads pinned to the first two CPUs this process may use hand
// one cache line back and forth. No allocation at all: it tells how far apart the host has
// put the two CPUs right now, which scripts/pc_states.py needs to sort the producer/consumer
// runs it surrounds. On the 2-CPU KVM guest this project is measured on it reads about 55 ns
// or about 330 ns, and switches between the two within seconds.
//
// usage: cpu_pingpong [round_trips=100000]
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "bench_util.hpp"

namespace {

alignas(64) std::atomic<long> g_turn{0};

// Waits for its turn (first, first + 2, ...) and passes the line on, `trips` times.
void bounce(long first, long trips) {
  for (long t = first; t < 2 * trips; t += 2) {
    while (g_turn.load(std::memory_order_acquire) != t) {
    }
    g_turn.store(t + 1, std::memory_order_release);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long trips = bench::arg_or(argc, argv, 1, 100000);
  std::thread other([trips] {
    bench::pin_to_cpu(pthread_self(), 1);
    bounce(1, trips);
  });
  bench::pin_to_cpu(pthread_self(), 0);
  // The clock starts once the other thread has answered: its start-up is not a trip.
  bounce(0, 1);
  while (g_turn.load(std::memory_order_acquire) != 2) {
  }
  const auto start = std::chrono::steady_clock::now();
  bounce(2, trips);
  while (g_turn.load(std::memory_order_acquire) != 2 * trips) {
  }
  const auto end = std::chrono::steady_clock::now();
  other.join();
  const double ns = std::chrono::duration<double, std::nano>(end - start).count();
  std::printf("cpu_pingpong: %ld round trips, %.1f ns each\n", trips - 1,
              ns / static_cast<double>(trips - 1));
  return 0;
}
