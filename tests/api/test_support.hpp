// Helpers shared by the API and hazard tests (isoshard linked in, overriding malloc/new).
//
// The compiler knows what malloc and operator new mean: it may fold malloc(SIZE_MAX) to
// NULL, drop a malloc/free pair whose memory is never used, or assume new never returns
// an unaligned pointer. Every size goes through opaque() and every pointer whose use
// matters through escape(), so the calls really reach isoshard.
#pragma once
#include <pthread.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "runtime/options.hpp"
#include "runtime/zone/size_class.hpp"

namespace isotest {

// The value, unknown to the optimiser.
template <class T>
[[gnu::always_inline]] inline T opaque(T v) {
  asm volatile("" : "+r"(v));
  return v;
}

// Pretends the pointed-to memory is read and written by someone the compiler cannot see.
[[gnu::always_inline]] inline void escape(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

// A thread's first allocations of each size class come from the common shard (light
// allocations, ISOSHARD_LIGHT_ALLOCS), and it binds a shard only after that. Tests about what
// a thread's own zones hold, about its shard's counters, and about frees travelling home to
// its zones, call this first: it uses up the light allocations of every class and binds the
// thread, so from then on the thread allocates from zones of its own.
inline void own_zones_from_now() {
  for (unsigned c = 0; c < iso::kClassCount; ++c) {
    unsigned n = iso::g_options.light_allocs;
    if (c == 0) ++n;  // one more than lightly: the thread binds
    for (unsigned i = 0; i < n; ++i) {
      void* p = std::malloc(iso::kClasses[c].chunk_bytes);
      escape(p);
      std::free(p);
    }
  }
}

inline bool is_aligned(const void* p, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(p) % alignment == 0;
}

// A byte pattern that differs per position and per seed, so a chunk handed out twice, or
// contents copied from the wrong place, do not compare equal by accident.
inline unsigned char pattern_byte(std::size_t i, std::uint64_t seed) {
  std::uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed * 0xbf58476d1ce4e5b9ull;
  return static_cast<unsigned char>(x >> 56 ^ x >> 17 ^ i);
}

inline void fill_pattern(void* p, std::size_t n, std::uint64_t seed) {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) b[i] = pattern_byte(i, seed);
  escape(p);
}

// Index of the first byte that differs from the pattern, or n when all match.
inline std::size_t first_pattern_mismatch(const void* p, std::size_t n, std::uint64_t seed) {
  escape(p);
  auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i)
    if (b[i] != pattern_byte(i, seed)) return i;
  return n;
}

// Index of the first non-zero byte, or n.
inline std::size_t first_nonzero(const void* p, std::size_t n) {
  escape(p);
  auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i)
    if (b[i] != 0) return i;
  return n;
}

// Cheap deterministic PRNG for sizes and shuffles (no libc state, thread-local by value).
struct XorShift {
  std::uint64_t s;
  explicit XorShift(std::uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull | 1) {}
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
};

// A one-shot event between threads (mutex + condition variable: no sleeps, no polling).
class Event {
 public:
  void set() {
    std::lock_guard<std::mutex> lock(m_);
    set_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return set_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool set_ = false;
};

// A raw pthread running a callable that outlives it. Unlike std::thread, creating it
// allocates nothing that the new thread frees (std::thread's state object is allocated by the
// creator and deleted by the new thread at its end: a cross-thread free, and a shard bound,
// in every thread).
template <class F>
class RawThread {
 public:
  explicit RawThread(F& f) : f_(&f) {
    if (pthread_create(&th_, nullptr, &RawThread::trampoline, f_) != 0) f_ = nullptr;
  }
  RawThread(const RawThread&) = delete;
  RawThread& operator=(const RawThread&) = delete;
  bool started() const { return f_ != nullptr; }
  void join() {
    if (f_) pthread_join(th_, nullptr);
    f_ = nullptr;
  }
  ~RawThread() { join(); }

 private:
  static void* trampoline(void* arg) {
    (*static_cast<F*>(arg))();
    return nullptr;
  }
  F* f_;
  pthread_t th_{};
};

}  // namespace isotest
