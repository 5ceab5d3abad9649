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

// Frees p into zone z, which shard s owns (the hot path, a free that bound the thread first,
// the common shard's frees).
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
    shard_free_owned(static_cast<Shard*>(s), z, p);
    if (ISO_UNLIKELY(--s->frees_until_chores == 0)) shard_free_chores(static_cast<Shard*>(s));
    return;
  }
  shard_free_remote(z, p, s);
}

}  // namespace iso
