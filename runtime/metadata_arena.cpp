#include "runtime/metadata_arena.hpp"

#include <sys/mman.h>

#include <cerrno>

#include "runtime/config.hpp"

namespace iso {

bool MetadataArena::init(std::size_t bytes) {
  int saved_errno = errno;  // a failed mapping is reported by the result alone
  std::size_t total = bytes + 2 * kPageBytes;
  void* r = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return false;
  char* inner = static_cast<char*>(r) + kPageBytes;
  if (mmap(inner, bytes, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) {
    munmap(r, total);
    return false;
  }
  base_ = inner;
  size_ = bytes;
  errno = saved_errno;
  return true;
}

void* MetadataArena::alloc(std::size_t bytes, std::size_t align) {
  std::size_t cur = used_.load(std::memory_order_relaxed);
  for (;;) {
    std::size_t start = (cur + align - 1) & ~(align - 1);
    if (start + bytes > size_) return nullptr;
    if (used_.compare_exchange_weak(cur, start + bytes, std::memory_order_relaxed))
      return base_ + start;
  }
}

}  // namespace iso
