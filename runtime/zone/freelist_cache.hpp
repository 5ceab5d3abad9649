// The freelist cache: a small stack of free chunk indices, popped first on the hot path.
// Free pushes the chunk it releases (when there is room); the cache is refilled from the
// bitmap only when empty, so a chunk is never in the cache and found by a scan at once.
#pragma once
#include <cstdint>

#include "runtime/config.hpp"

namespace iso {

struct FreelistCache {
  std::uint32_t count;
  // One more than it holds: a full cache's push_if_room writes the last, which is never read.
  std::uint32_t slots[kFreelistCacheSlots + 1];

  ISO_ALWAYS_INLINE bool empty() const { return count == 0; }
  ISO_ALWAYS_INLINE bool full() const { return count == kFreelistCacheSlots; }
  ISO_ALWAYS_INLINE std::uint32_t pop() { return slots[--count]; }
  ISO_ALWAYS_INLINE void push(std::uint32_t idx) { slots[count++] = idx; }
  // Pushes idx when there is room, without a branch; returns 1 if it did, 0 if full.
  ISO_ALWAYS_INLINE std::uint32_t push_if_room(std::uint32_t idx) {
    std::uint32_t n = count;
    std::uint32_t room = n < kFreelistCacheSlots;
    slots[n] = idx;
    count = n + room;
    return room;
  }
};

}  // namespace iso
