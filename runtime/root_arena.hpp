// The root arena: one reserved range cut into kZoneSlotBytes slots, the zone table indexed by
// slot, on-demand zone creation and big allocations. Everything here but zone_of is a slow
// path and runs under the root lock.
#pragma once
#include <cstddef>
#include <cstdint>

#include "runtime/config.hpp"
#include "runtime/spin_lock.hpp"
#include "runtime/zone/zone.hpp"

namespace iso {

// Before init the base lies above user space, so every pointer misses the range.
inline constexpr std::uintptr_t kNoBase = 0xffff800000000000ull;
extern std::uintptr_t g_base ISO_HIDDEN;
extern std::size_t g_range_bytes ISO_HIDDEN;  // set once by root_init: may be scaled down
extern Zone* g_zones ISO_HIDDEN;

// The zone (or big-allocation) entry of the slot holding p; nullptr outside the range.
ISO_ALWAYS_INLINE Zone* zone_of(const void* p) {
  std::uintptr_t d = reinterpret_cast<std::uintptr_t>(p) - g_base;
  if (ISO_UNLIKELY(d >= g_range_bytes)) return nullptr;
  // root_init sets g_zones before g_base: in range, the table exists (and callers need not
  // test the result for null again).
  Zone* zones = g_zones;
  if (zones == nullptr) __builtin_unreachable();
  return &zones[d >> kZoneSlotShift];
}

ISO_ALWAYS_INLINE std::uintptr_t slot_base(std::uint32_t slot) {
  return g_base + (std::uintptr_t{slot} << kZoneSlotShift);
}

// Idempotent and thread-safe. Returns false if the address space could not be reserved.
// Reports once on stderr when even the smallest reservations fail.
bool root_init();
bool root_ready();
// Set by root_init: the slots the range holds (see kMaxSlotCount); the shard and batch arenas
// are reserved in proportion.
std::uint32_t root_slot_count();
// A new zone of class cls owned by `owner` (a shard); nullptr when out of address space.
Zone* root_new_zone(unsigned cls, const void* owner);

// Big allocations (above kMaxSmallBytes): their own pages between guard pages.
void* root_big_alloc(std::size_t bytes, std::size_t align, bool zero);
void root_big_free(Zone& z, void* p);
std::size_t root_big_usable(const Zone& z);

// Runs of contiguous slots (root lock held by the caller).
SpinLock& root_lock();
std::uint32_t root_take_slots(std::uint32_t count);  // kNoZone when exhausted
void root_give_slots(std::uint32_t first, std::uint32_t count);

struct RootStats {
  std::uint32_t zones;
  std::uint32_t slots_used;
  std::uint32_t big_live;
  std::size_t big_cached_bytes;
  std::size_t metadata_bytes;
};
RootStats root_stats();

// fork: the parent takes the root's locks before fork and releases them after; the child
// resets them (its only thread is the one that forked).
void root_prefork();
void root_postfork(bool child);

}  // namespace iso
