// The start gate the threaded benchmarks start their threads and their clock at
// (perf/start_gate.hpp): no thread may start before the clock does.
#include "perf/start_gate.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace {

TEST(StartGate, NoThreadPassesBeforeTheGateOpensAndAllPassAfter) {
  constexpr int kThreads = 8;
  bench::StartGate gate(kThreads);
  std::atomic<bool> opened{false};
  std::atomic<int> early{0}, passed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++)
    threads.emplace_back([&] {
      gate.pass();
      if (!opened.load()) early++;
      passed++;
    });
  gate.wait_for_all();
  EXPECT_EQ(passed.load(), 0);  // every thread has arrived, and none has gone on
  opened.store(true);
  const double start = gate.open();
  for (auto& t : threads) t.join();
  EXPECT_EQ(early.load(), 0);
  EXPECT_EQ(passed.load(), kThreads);
  EXPECT_LE(start, bench::now_seconds());
}

}  // namespace
