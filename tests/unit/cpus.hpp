// Placing test threads on CPUs: the CPUs the process may use, and pinning the calling thread.
#pragma once
#include <sched.h>

#include <gtest/gtest.h>

#include <vector>

namespace iso {

// The CPUs this process may run on, in order. Read it before pinning: threads inherit the
// pinned thread's set.
inline std::vector<unsigned> usable_cpu_list() {
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  std::vector<unsigned> cpus;
  for (unsigned c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// Keeps the calling thread on cpu alone (sched_setaffinity moves it there at once).
inline bool pin_to(unsigned cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0;
}

}  // namespace iso
