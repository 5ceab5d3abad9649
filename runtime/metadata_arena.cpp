#include "runtime/metadata_arena.hpp"

#include <sys/mman.h>

#include <cerrno>

#include "runtime/config.hpp"
#include "runtime/platform.hpp"

namespace iso {

bool MetadataArena::init(std::size_t bytes) {
  int saved_errno = errno;  // a failed mapping is reported by the result alone
  bytes = (bytes + kPageBytes - 1) & ~(kPageBytes - 1);
  std::size_t total = bytes + 2 * kPageBytes;
  void* r = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return false;
  char* inner = static_cast<char*>(r) + kPageBytes;
  if (mprotect(inner, bytes, PROT_READ) != 0) {
    munmap(r, total);
    return false;
  }
  base_ = inner;
  size_ = bytes;
  errno = saved_errno;
  return true;
}

bool MetadataArena::init_up_to(std::size_t bytes, std::size_t min_bytes) {
  for (; bytes >= min_bytes; bytes /= 2)
    if (init(bytes)) return true;
  return false;
}

void MetadataArena::release() {
  if (!base_) return;
  munmap(base_ - kPageBytes, size_ + 2 * kPageBytes);
  base_ = nullptr;
  size_ = 0;
  used_.store(0, std::memory_order_relaxed);
  committed_.store(0, std::memory_order_relaxed);
}

bool MetadataArena::commit_prefix(std::size_t bytes) {
  if (bytes > size_) return false;
  std::size_t want = (bytes + kMetadataCommitStepBytes - 1) & ~(kMetadataCommitStepBytes - 1);
  if (want > size_) want = size_;
  std::size_t have = committed_.load(std::memory_order_acquire);
  while (have < bytes) {
    // Racing threads may both make [have, want) writable: mprotect is idempotent, and the
    // watermark only ever moves to a value its writer has made writable.
    if (!os::commit(base_ + have, want - have, false)) return false;
    if (committed_.compare_exchange_strong(have, want, std::memory_order_acq_rel)) return true;
  }
  return true;
}

void* MetadataArena::alloc(std::size_t bytes, std::size_t align) {
  std::size_t cur = used_.load(std::memory_order_relaxed);
  for (;;) {
    std::size_t start = (cur + align - 1) & ~(align - 1);
    if (start + bytes > size_) return nullptr;
    if (used_.compare_exchange_weak(cur, start + bytes, std::memory_order_relaxed)) {
      // The claimed range stays claimed if this fails: a little address space, never memory.
      return commit_prefix(start + bytes) ? base_ + start : nullptr;
    }
  }
}

}  // namespace iso
