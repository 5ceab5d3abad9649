// A start line for a benchmark's threads: each one waits at the gate until the main thread
// has created (and pinned) all of them, and the clock starts when the gate opens.
//
// Why: producer_consumer used to start its clock before creating its threads, and the first
// ones worked while the main thread was still creating the rest. With four threads that
// never block on two CPUs, most runs then began with three threads on one CPU and stayed so
// for much of a 0.1 s run: the run measured how soon the scheduler undid that start more
// than the allocator. At the gate the waiting threads sleep (std::latch waits on a futex),
// and the scheduler places them afresh when the gate wakes them all. In 40 unpinned runs
// under each of isoshard and tcmalloc, crowded starts went from 25 and 22 to 3 and 1, and
// the median times fell by 46% and 40% (docs/DESIGN.md, known limits).
#pragma once

#include <cstddef>
#include <latch>

#include "bench_util.hpp"

namespace bench {

class StartGate {
 public:
  explicit StartGate(std::ptrdiff_t threads) : arrived_(threads), opened_(1) {}

  // A worker thread: arrives, then sleeps until the gate opens.
  void pass() {
    arrived_.count_down();
    opened_.wait();
  }

  // The main thread: waits until every worker has arrived.
  void wait_for_all() { arrived_.wait(); }

  // The main thread: waits for every worker, opens the gate and returns the time it opened
  // (the start of the measured run).
  double open() {
    wait_for_all();
    const double start = now_seconds();
    opened_.count_down();
    return start;
  }

 private:
  std::latch arrived_;
  std::latch opened_;
};

}  // namespace bench
