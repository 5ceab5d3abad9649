// Which CPU a thread ran on during a run, recorded only when it changes, so that a run the
// scheduler placed can say afterwards where its threads were.
//
// Why: unpinned, producer_consumer's four threads on two CPUs settle into one placement for
// most of a run (a producer beside its consumer, or every chunk crossing cores), and those
// differ by 1.3x and more. Before the threads started at a gate (start_gate.hpp), most runs
// also began with three of the four on one CPU and kept that for much of the run. A median
// over unpinned runs then largely counts which placement the scheduler chose how often.
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
    if (cpus < 1) return -1;
    const size_t fair = (traces.size() + static_cast<size_t>(cpus) - 1) / static_cast<size_t>(cpus);
    return share_of_time(traces, end, [&](double t) {
      std::map<int, size_t> on;
      size_t most = 0;
      for (const CpuTrace* tr : traces) most = std::max(most, ++on[tr->cpu_at(t)]);
      return most <= fair;
    });
  }

  // The share of the time from when both had started to `end` during which this thread and
  // `other` ran on one CPU; negative when either trace overflowed or is empty.
  double share_beside(const CpuTrace& other, double end) const {
    return share_of_time({this, &other}, end,
                         [&](double t) { return cpu_at(t) == other.cpu_at(t); });
  }

  static constexpr size_t kMaxChanges = 4096;  // more moves than this: the shares are unknown

 private:
  struct Change {
    double t;
    int cpu;
  };

  // The share of the time from when all of `traces` had started to `end` for which
  // holds(t) is true, t stepping through the traces' change times (the CPUs are constant
  // between them); negative when a trace overflowed or is empty.
  template <class Holds>
  static double share_of_time(const std::vector<const CpuTrace*>& traces, double end,
                              Holds holds) {
    double from = 0;
    std::vector<double> times;
    for (const CpuTrace* t : traces) {
      if (t->overflowed_ || t->n_ == 0) return -1;
      from = std::max(from, t->changes_[0].t);
      for (size_t i = 0; i < t->n_; i++) times.push_back(t->changes_[i].t);
    }
    if (from >= end) return -1;
    times.push_back(from);
    times.push_back(end);
    std::sort(times.begin(), times.end());
    double held = 0;
    for (size_t k = 0; k + 1 < times.size(); k++) {
      double t = times[k], next = std::min(times[k + 1], end);
      if (t >= from && next > t && holds(t)) held += next - t;
    }
    return held / (end - from);
  }

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
