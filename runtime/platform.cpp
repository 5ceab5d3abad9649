#include "runtime/platform.hpp"

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>

#include <atomic>
#include <cerrno>

#include "runtime/config.hpp"

namespace iso::os {
namespace {

// malloc that succeeds, and free, must leave errno as they found it (POSIX.1-2024), even
// when a syscall underneath fails harmlessly.
class ErrnoKeeper {
 public:
  ErrnoKeeper() : saved_(errno) {}
  ~ErrnoKeeper() { errno = saved_; }

 private:
  int saved_;
};

// madvise wants page-aligned ranges; metadata is packed tighter than that.
void advise_pages(void* p, std::size_t bytes, int advice) {
  auto start = reinterpret_cast<std::uintptr_t>(p) & ~(kPageBytes - 1);
  auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes + kPageBytes - 1) & ~(kPageBytes - 1);
  madvise(reinterpret_cast<void*>(start), end - start, advice);
}

}  // namespace

void* reserve(std::size_t bytes) {
  ErrnoKeeper keep;
  void* p = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void unreserve(void* p, std::size_t bytes) {
  ErrnoKeeper keep;
  munmap(p, bytes);
}

std::size_t address_space_limit() {
  ErrnoKeeper keep;
  rlimit r{};
  if (getrlimit(RLIMIT_AS, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  return static_cast<std::size_t>(r.rlim_cur);
}

void reserve_at(void* p, std::size_t bytes) {
  ErrnoKeeper keep;
  mmap(p, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  madvise(p, bytes, MADV_RANDOM);  // the advice the rest of the reservation carries
}

bool commit(void* p, std::size_t bytes, bool populate) {
  ErrnoKeeper keep;
  // mprotect keeps the mapping, and with it the advice given once to the whole reservation:
  // a fresh mapping per step needed its own two madvise calls, three syscalls a step.
  if (mprotect(p, bytes, PROT_READ | PROT_WRITE) != 0) return false;
  // Linux 5.14 and later; before that the pages fault in as they are touched.
  if (populate) madvise(p, bytes, MADV_POPULATE_WRITE);
  return true;
}

void decommit(void* p, std::size_t bytes) {
  ErrnoKeeper keep;
  // The pages go back to the OS and any later touch faults instead of reading zeros; the
  // mapping and its advice stay.
  if (madvise(p, bytes, MADV_DONTNEED) == 0 && mprotect(p, bytes, PROT_NONE) == 0) return;
  // Part of the range is unmapped (a move without MREMAP_DONTUNMAP, before Linux 5.7):
  // reserve it again, so no other mapping can land there.
  reserve_at(p, bytes);
}

void discard(void* p, std::size_t bytes) {
  ErrnoKeeper keep;
  madvise(p, bytes, MADV_DONTNEED);
}

bool move_pages(std::uintptr_t src, std::uintptr_t dst, std::size_t bytes) {
  ErrnoKeeper keep;
  auto* from = reinterpret_cast<void*>(src);
  auto* to = reinterpret_cast<void*>(dst);
  void* r = mremap(from, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, to);
  if (r != MAP_FAILED) {
    // src is still mapped, its pages gone with the move: one mprotect makes it inaccessible.
    mprotect(from, bytes, PROT_NONE);
    return true;
  }
  if (errno == EINVAL) {  // kernels before 5.7: src is unmapped by the move
    r = mremap(from, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    if (r != MAP_FAILED) {
      reserve_at(from, bytes);
      return true;
    }
  }
  reserve_at(to, bytes);
  return false;
}

void advise_bitmap(void* p, std::size_t bytes) {
  ErrnoKeeper keep;
  advise_pages(p, bytes, MADV_WILLNEED);
  advise_pages(p, bytes, MADV_SEQUENTIAL);
}

void advise_user(void* p, std::size_t bytes) {
  ErrnoKeeper keep;
  advise_pages(p, bytes, MADV_WILLNEED);
  advise_pages(p, bytes, MADV_RANDOM);
}

void try_lock(void* p, std::size_t bytes) {
  ErrnoKeeper keep;
  (void)mlock(p, bytes);
}

bool moves_span_mappings() {
  ErrnoKeeper keep;
  // Two adjacent one-page mappings that cannot merge (different advice), moved as one.
  auto* area = static_cast<char*>(reserve(4 * kPageBytes));
  if (!area) return false;
  bool ok = commit(area, kPageBytes, false) && commit(area + kPageBytes, kPageBytes, false) &&
            madvise(area + kPageBytes, kPageBytes, MADV_RANDOM) == 0 &&
            mremap(area, 2 * kPageBytes, 2 * kPageBytes, MREMAP_MAYMOVE | MREMAP_FIXED,
                   area + 2 * kPageBytes) != MAP_FAILED;
  munmap(area, 4 * kPageBytes);
  return ok;
}

std::uint64_t random_u64() {
  ErrnoKeeper keep;
  std::uint64_t v = 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) == sizeof v) return v;
  // No entropy yet (early boot): a clock- and address-seeded splitmix step still varies.
  static std::atomic<std::uint64_t> fallback{0x9e3779b97f4a7c15ull};
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  std::uint64_t z = fallback.fetch_add(0x9e3779b97f4a7c15ull) ^
                    static_cast<std::uint64_t>(ts.tv_nsec) ^ reinterpret_cast<std::uintptr_t>(&v);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace iso::os

namespace iso::os {

std::uint64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

unsigned usable_cpus() {
  ErrnoKeeper keep;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  int n = CPU_COUNT(&set);
  return n > 0 ? static_cast<unsigned>(n) : 1;
}

unsigned current_cpu() {
  ErrnoKeeper keep;
  int cpu = sched_getcpu();
  return cpu > 0 ? static_cast<unsigned>(cpu) : 0;
}

}  // namespace iso::os
