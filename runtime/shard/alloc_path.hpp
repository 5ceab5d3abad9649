// The hot paths: allocation from the thread's current zone cache, and free into a zone the
// thread owns. No lock, no atomic read-modify-write, no syscall, no division; everything
// else falls to the [[gnu::cold]] slow paths in shard_alloc.cpp.
#pragma once
#include <cstddef>

#include "runtime/root_arena.hpp"
#include "runtime/shard/shard.hpp"
#include "runtime/zone/size_class.hpp"
#include "runtime/zone/zone.hpp"

namespace iso {

// bytes <= kMaxSmallBytes.
template <bool Zero>
ISO_ALWAYS_INLINE void* shard_malloc_small(std::size_t bytes) {
  unsigned cls = size_class_of(bytes);
  Zone* z = t_shard->current[cls];
  if (ISO_LIKELY(!z->cache.empty())) return zone_pop<Zero>(*z);
  return shard_alloc_slow(cls, Zero);
}

// After a free into zone z, which shard s owns: a full zone with room again, or a newly
// empty zone to offer as a donor.
ISO_ALWAYS_INLINE void shard_note_free(Shard* s, Zone* z) {
  if (ISO_UNLIKELY(!z->listed) || ISO_UNLIKELY(z->used == 0 && !z->donor_listed))
    shard_zone_event(s, z);
}

// Frees p into zone z, which shard s owns (the common shard's frees; free's hot path does the
// same, with the rest in one tail call).
ISO_ALWAYS_INLINE void shard_free_owned(Shard* s, Zone* z, void* p) {
  zone_free(*z, p);
  shard_note_free(s, z);
}

ISO_ALWAYS_INLINE void shard_free(void* p) {
  Zone* z = zone_of(p);
  if (ISO_UNLIKELY(z == nullptr)) return shard_free_slow(nullptr, p);  // null, or not ours
  ShardFront* s = t_shard;
  // Big and unused slots have no owner, so they never pass this test.
  if (ISO_LIKELY(z->owner == s)) {
    zone_free(*z, p);
    // Whatever else a free may have to do is one tail call: nothing here lives across a
    // call, so the remote path below is a plain jump that saves no register. (This path
    // moves the stack pointer by 8, for the fault reports its cold blocks call.) The
    // countdown comes first so that it compiles to one `sub` on memory and a jump.
    if (ISO_UNLIKELY(--s->frees_until_chores == 0) || ISO_UNLIKELY(!z->listed) ||
        ISO_UNLIKELY(z->used == 0 && !z->donor_listed))
      shard_free_owned_rest(static_cast<Shard*>(s), z);
    return;
  }
  shard_free_remote(z, p, s);
}

}  // namespace iso
