// Bump allocation of runtime metadata (bitmaps, shards, batches, tables) from a reserved range
// fenced by guard pages. Never returns memory: metadata is reused, not freed.
//
// The range is reserved read-only and made writable in steps as allocation reaches it. A
// private writable mapping is charged against the commit limit in full under
// vm.overcommit_memory=2, where MAP_NORESERVE is ignored: reserved read-write, the 64 GiB
// bitmap arena alone failed every process's first malloc there ("ls: memory exhausted").
// Read-only, the untouched rest costs nothing and still reads as zeros (a stray pointer's
// zone entry reads as an unused slot), and the pages that become writable fault in as
// they are touched, so RSS still follows use.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace iso {

inline constexpr std::size_t kMetadataCommitStepBytes = 64 * 1024;

class MetadataArena {
 public:
  // Reserves `bytes` of read-only memory between two guard pages.
  bool init(std::size_t bytes);
  // As init, halving `bytes` after each failure down to min_bytes (a capped address space).
  bool init_up_to(std::size_t bytes, std::size_t min_bytes);
  // Gives the range back; only before anything was allocated from it.
  void release();
  // Thread-safe; the memory is writable. nullptr when the range is exhausted or cannot be
  // made writable.
  void* alloc(std::size_t bytes, std::size_t align = 64);
  // Makes the first `bytes` writable (for a table indexed from base()); false if it cannot.
  // Thread-safe.
  bool commit_prefix(std::size_t bytes);
  char* base() const { return base_; }
  std::size_t size() const { return size_; }
  std::size_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  char* base_ = nullptr;
  std::size_t size_ = 0;
  std::atomic<std::size_t> used_{0};
  std::atomic<std::size_t> committed_{0};  // [0, committed_) is writable
};

}  // namespace iso
