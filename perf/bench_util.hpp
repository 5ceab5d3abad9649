// Small helpers shared by the C++ benchmarks: a cheap PRNG, a wall clock, pinning a thread
// to a CPU, and "tagged" chunks whose integrity the freeing thread can check.
#pragma once

#include <pthread.h>
#include <sched.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace bench {

// xorshift64*: per-thread, fixed seeds, so runs are comparable across allocators.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ull | 1) {}
  uint64_t next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545f4914f6cdd1dull;
  }
  // Uniform-ish in [lo, hi].
  size_t between(size_t lo, size_t hi) { return lo + next() % (hi - lo + 1); }

 private:
  uint64_t state_;
};

inline double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Positional integer argument with a default; rejects junk and values < 1.
inline long arg_or(int argc, char** argv, int index, long fallback) {
  if (index >= argc) return fallback;
  char* end = nullptr;
  long v = std::strtol(argv[index], &end, 10);
  if (*argv[index] == '\0' || *end != '\0' || v < 1) {
    std::fprintf(stderr, "bad argument %d: '%s' (want a positive integer)\n", index, argv[index]);
    std::exit(2);
  }
  return v;
}

// Pins thread t to the k-th CPU this process may run on (k modulo their count).
inline void pin_to_cpu(pthread_t t, long k) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpus[static_cast<size_t>(k) % cpus.size()], &one);
  pthread_setaffinity_np(t, sizeof one, &one);
}

// A tagged chunk records its size in the first two bytes and a marker in the
// last one. Writing both ends touches the chunk; checking them on free catches
// an allocator that handed the same memory out twice or lost writes.
constexpr size_t kMinTagged = 16;
constexpr size_t kMaxTagged = 65535;
constexpr unsigned char kTagMarker = 0xc3;

inline void* alloc_tagged(size_t size) {
  auto* p = static_cast<unsigned char*>(std::malloc(size));
  if (!p) {
    std::fprintf(stderr, "malloc(%zu) returned NULL\n", size);
    std::abort();
  }
  uint16_t s = static_cast<uint16_t>(size);
  std::memcpy(p, &s, sizeof s);
  p[size - 1] = kTagMarker;
  return p;
}

inline void free_tagged(void* chunk) {
  auto* p = static_cast<unsigned char*>(chunk);
  uint16_t s;
  std::memcpy(&s, p, sizeof s);
  if (s < kMinTagged || p[s - 1] != kTagMarker) {
    std::fprintf(stderr, "corrupt chunk %p (size tag %u)\n", chunk, unsigned{s});
    std::abort();
  }
  std::free(p);
}

// Peak resident set of this program image in KiB: VmHWM from /proc/self/status, which
// counts this image's pages alone. getrusage's maxrss also counts the pages of the
// process that forked it, as they were when it called exec (11 MiB for a python driver).
inline long peak_rss_kib() {
  std::FILE* status = std::fopen("/proc/self/status", "r");
  if (!status) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, status))
    if (std::sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
  std::fclose(status);
  return kib;
}

// The line scripts/scaling.py reads the peak RSS from, after the program's own result.
inline void print_peak_rss() { std::printf("peak RSS: %ld KiB\n", peak_rss_kib()); }

}  // namespace bench
