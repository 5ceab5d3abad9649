// The placement shares producer_consumer prints (perf/cpu_trace.hpp), on hand-made traces:
// pc_states.py sorts unpinned runs by them, so a wrong share would sort runs wrongly.
#include "perf/cpu_trace.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace {

using bench::CpuTrace;

// A trace on the heap (4096 changes do not belong on the stack), with (time, cpu) records.
std::unique_ptr<CpuTrace> trace(std::initializer_list<std::pair<double, int>> changes) {
  auto t = std::make_unique<CpuTrace>();
  for (auto [at, cpu] : changes) t->record(at, cpu);
  return t;
}

TEST(CpuTrace, ShareBesideCountsOnlyTheTimeOnOneCpuAfterBothStarted) {
  // Producer on CPU 1 throughout; consumer starts at 1.0 on CPU 0, moves to CPU 1 at 3.0.
  auto producer = trace({{0.0, 1}});
  auto consumer = trace({{1.0, 0}, {3.0, 1}});
  EXPECT_DOUBLE_EQ(producer->share_beside(*consumer, 5.0), 0.5);  // 2 of the 4 s from 1.0
  EXPECT_DOUBLE_EQ(consumer->share_beside(*producer, 5.0), 0.5);
  EXPECT_DOUBLE_EQ(producer->share_beside(*trace({{0.0, 1}}), 5.0), 1.0);
  EXPECT_DOUBLE_EQ(producer->share_beside(*trace({{0.0, 0}}), 5.0), 0.0);
}

TEST(CpuTrace, ThreeThreadsOfFourOnOneOfTwoCpusAreNotSpreadEvenly) {
  // The crowded start: p0, p1 and c0 on CPU 1, c1 on CPU 0, until p1 moves at 6.0.
  auto p0 = trace({{0.0, 1}});
  auto p1 = trace({{0.0, 1}, {6.0, 0}});
  auto c0 = trace({{0.0, 1}});
  auto c1 = trace({{0.0, 0}});
  std::vector<const CpuTrace*> all = {p0.get(), p1.get(), c0.get(), c1.get()};
  EXPECT_DOUBLE_EQ(CpuTrace::share_spread_evenly(all, 2, 10.0), 0.4);
  // On four CPUs, two threads on one CPU is already uneven.
  EXPECT_DOUBLE_EQ(CpuTrace::share_spread_evenly(all, 4, 10.0), 0.0);
  // Beside: p0 with c0 all along; p1 with c1 from 6.0.
  EXPECT_DOUBLE_EQ(p0->share_beside(*c0, 10.0), 1.0);
  EXPECT_DOUBLE_EQ(p1->share_beside(*c1, 10.0), 0.4);
}

TEST(CpuTrace, AnOverflowedOrEmptyTraceMakesTheSharesUnknown) {
  auto moving = std::make_unique<CpuTrace>();
  for (size_t i = 0; i <= CpuTrace::kMaxChanges; ++i)
    moving->record(static_cast<double>(i), static_cast<int>(i % 2));
  auto still = trace({{0.0, 0}});
  EXPECT_LT(moving->share_beside(*still, 1e9), 0);
  EXPECT_LT(CpuTrace::share_spread_evenly({moving.get(), still.get()}, 2, 1e9), 0);
  auto empty = std::make_unique<CpuTrace>();
  EXPECT_LT(still->share_beside(*empty, 10.0), 0);
}

}  // namespace
