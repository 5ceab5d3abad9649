// Which CPU a thread ran on during a run, recorded only when it changes, so that a run the
// scheduler placed can say afterwards where its threads were.
//
// Why: unpinned, producer_consumer's four threads on two CPUs settle into one placement for
// most of a run (a producer beside its consumer, or every chunk crossing cores), and those
// differ by 1.3x and more. Most runs also start with three of the four on one CPU, and keep
// that for much of the run. A median over unpinned runs then largely counts which placement
// the scheduler chose how often.
#pragma once

#include <sched.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <vector>

#include "bench_util.hpp"

namespace bench {

class CpuTrace {
 public:
  // Records the CPU the calling thread starts on.
  void start() { record(now_seconds(), sched_getcpu()); }

  // Called often by the thread: every 256th call reads the CPU (through rseq, no syscall)
  // and records it if it changed, so a move shows within 256 calls.
  void tick() {
    if ((++ticks_ & 255) != 0) return;
    int cpu = sched_getcpu();
    if (n_ == 0 || changes_[n_ - 1].cpu != cpu) record(now_seconds(), cpu);
  }

  // Records that the thread runs on `cpu` from time t on (t ascending; tests call it too).
  void record(double t, int cpu) {
    if (n_ == kMaxChanges) {
      overflowed_ = true;
      return;
    }
    changes_[n_++] = {t, cpu};
  }

  // The share of the time from when all of `traces` had started to `end` during which no CPU
  // ran more of them than an even spread over `cpus` CPUs would put there (for 4 threads on
  // 2 CPUs: two each); negative when a trace overflowed or is empty.
  static double share_spread_evenly(const std::vector<const CpuTrace*>& traces, int cpus,
                                    double end) {
    double from = 0;
    std::vector<double> times;
    for (const CpuTrace* t : traces) {
      if (t->overflowed_ || t->n_ == 0) return -1;
      from = std::max(from, t->changes_[0].t);
      for (size_t i = 0; i < t->n_; i++) times.push_back(t->changes_[i].t);
    }
    if (from >= end || cpus < 1) return -1;
    times.push_back(from);
    std::sort(times.begin(), times.end());
    const size_t fair = (traces.size() + static_cast<size_t>(cpus) - 1) / static_cast<size_t>(cpus);
    double even = 0;
    for (size_t k = 0; k < times.size(); k++) {  // each step between change times
      double t = times[k], next = k + 1 < times.size() ? std::min(times[k + 1], end) : end;
      if (t < from || next <= t) continue;
      std::map<int, size_t> on;
      size_t most = 0;
      for (const CpuTrace* tr : traces) most = std::max(most, ++on[tr->cpu_at(t)]);
      if (most <= fair) even += next - t;
    }
    return even / (end - from);
  }

  // The share of the time from when both had started to `end` during which this thread and
  // `other` ran on one CPU; negative when either trace overflowed or is empty.
  double share_beside(const CpuTrace& other, double end) const {
    if (overflowed_ || other.overflowed_ || n_ == 0 || other.n_ == 0) return -1;
    const double from = std::max(changes_[0].t, other.changes_[0].t);
    if (from >= end) return -1;
    double t = from, together = 0;
    size_t i = 0, j = 0;
    while (t < end) {  // over the merged change times: each step has one CPU per thread
      while (i + 1 < n_ && changes_[i + 1].t <= t) i++;
      while (j + 1 < other.n_ && other.changes_[j + 1].t <= t) j++;
      double next = end;
      if (i + 1 < n_) next = std::min(next, changes_[i + 1].t);
      if (j + 1 < other.n_) next = std::min(next, other.changes_[j + 1].t);
      if (changes_[i].cpu == other.changes_[j].cpu) together += next - t;
      t = next;
    }
    return together / (end - from);
  }

  static constexpr size_t kMaxChanges = 4096;  // more moves than this: the shares are unknown

 private:
  struct Change {
    double t;
    int cpu;
  };

  // The CPU at time t (at or after the first record).
  int cpu_at(double t) const {
    size_t i = 0;
    while (i + 1 < n_ && changes_[i + 1].t <= t) i++;
    return changes_[i].cpu;
  }

  Change changes_[kMaxChanges];
  size_t n_ = 0;
  unsigned ticks_ = 0;
  bool overflowed_ = false;
};

}  // namespace bench
