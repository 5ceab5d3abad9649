// Bump allocation of runtime metadata (bitmaps, shards, batches) from a reserved range
// fenced by guard pages. Pages are touched lazily (MAP_NORESERVE), so reserving is free and
// RSS follows use. Never returns memory: metadata is reused, not freed.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace iso {

class MetadataArena {
 public:
  // Maps `bytes` of read-write, lazily committed memory between two guard pages.
  bool init(std::size_t bytes);
  // Thread-safe; nullptr when the range is exhausted.
  void* alloc(std::size_t bytes, std::size_t align = 64);
  char* base() const { return base_; }
  std::size_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  char* base_ = nullptr;
  std::size_t size_ = 0;
  std::atomic<std::size_t> used_{0};
};

}  // namespace iso
