// The root's lock: slow paths only (zone creation, big allocations). A spin lock that
// yields, because pthread mutexes may not be usable before libc is initialised.
#pragma once
#include <sched.h>

#include <atomic>

namespace iso {

class SpinLock {
 public:
  void lock() {
    for (unsigned spins = 0; flag_.exchange(true, std::memory_order_acquire); ++spins) {
      while (flag_.load(std::memory_order_relaxed)) {
        if (++spins > 64) sched_yield();
        else __builtin_ia32_pause();
      }
    }
  }
  // False at once when the lock is held: for work that whoever comes next can do as well.
  bool try_lock() {
    return !flag_.load(std::memory_order_relaxed) && !flag_.exchange(true, std::memory_order_acquire);
  }
  void unlock() { flag_.store(false, std::memory_order_release); }
  // After fork the child's only thread may find the lock held by a thread that no longer exists.
  void reset_in_child() { flag_.store(false, std::memory_order_relaxed); }

 private:
  std::atomic<bool> flag_{false};
};

class LockGuard {
 public:
  explicit LockGuard(SpinLock& l) : l_(l) { l_.lock(); }
  ~LockGuard() { l_.unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  SpinLock& l_;
};

}  // namespace iso
