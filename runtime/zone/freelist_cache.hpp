// The freelist cache: a small stack of free chunk indices, popped first on the hot path.
// Free pushes the chunk it releases (when there is room); the cache is refilled from the
// bitmap only when empty, so a chunk is never in the cache and found by a scan at once.
#pragma once
#include <cstdint>

#include "runtime/config.hpp"

namespace iso {

struct FreelistCache {
  std::uint32_t count;
  std::uint32_t slots[kFreelistCacheSlots];

  ISO_ALWAYS_INLINE bool empty() const { return count == 0; }
  ISO_ALWAYS_INLINE bool full() const { return count == kFreelistCacheSlots; }
  ISO_ALWAYS_INLINE std::uint32_t pop() { return slots[--count]; }
  ISO_ALWAYS_INLINE void push(std::uint32_t idx) { slots[count++] = idx; }
};

}  // namespace iso
