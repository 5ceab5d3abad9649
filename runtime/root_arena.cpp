#include "runtime/root_arena.hpp"

#include <sys/mman.h>

#include <atomic>

#include "runtime/big_alloc.hpp"
#include "runtime/errors.hpp"
#include "runtime/metadata_arena.hpp"
#include "runtime/options.hpp"
#include "runtime/platform.hpp"

namespace iso {

constinit std::uintptr_t g_base = kNoBase;
// Next to g_base (both nonzero, so both in .data): free reads them together. Before init
// no user pointer lies within 1 byte of kNoBase.
constinit std::size_t g_range_bytes = 1;
constinit Zone* g_zones = nullptr;

namespace {

struct SlotRun {
  std::uint32_t first;
  std::uint32_t count;
};
inline constexpr std::uint32_t kMaxFreeRuns = 1u << 16;

constinit SpinLock g_lock;
constinit std::atomic<bool> g_ready{false};
constinit bool g_init_failed = false;  // reported once; later calls fail at once
constinit std::uint32_t g_slot_count = 0;
constinit std::uint32_t g_next_slot = 0;
constinit std::uint32_t g_zone_count = 0;
constinit std::uint32_t g_free_run_count = 0;
constinit SlotRun* g_free_runs = nullptr;
constinit MetadataArena g_bitmaps;
constinit MetadataArena g_tables;
// g_zones: made writable as slots are taken (see MetadataArena); the rest reads as unused.
constinit MetadataArena g_zone_table;

// As many slots as fit half the address-space limit (see config.hpp).
std::size_t slots_for_limit() {
  std::size_t fit = os::address_space_limit() / 2 / kReserveBytesPerSlot;
  return fit < kMaxSlotCount ? fit : kMaxSlotCount;
}

// The range of `slots` slots, the zone table covering them and the bitmap arena; all or
// nothing. Returns the range.
void* reserve_slots(std::size_t slots) {
  std::size_t range_bytes = slots * kZoneSlotBytes;
  void* range = os::reserve(range_bytes);
  if (!range) return nullptr;
  std::size_t zone_table = (slots * sizeof(Zone) + kPageBytes - 1) & ~(kPageBytes - 1);
  if (g_zone_table.init(zone_table)) {
    if (g_tables.init(kMaxFreeRuns * sizeof(SlotRun))) {
      if (g_bitmaps.init(slots * kBitmapBytesPerSlot)) return range;
      g_tables.release();
    }
    g_zone_table.release();
  }
  os::unreserve(range, range_bytes);
  return nullptr;
}

}  // namespace

SpinLock& root_lock() { return g_lock; }
bool root_ready() { return g_ready.load(std::memory_order_acquire); }
std::uint32_t root_slot_count() { return g_slot_count; }

static_assert(sizeof(Zone) <= kZoneEntryBytesBound, "kReserveBytesPerSlot counts zones by it");

bool root_init() {
  if (root_ready()) return true;
  LockGuard guard(g_lock);
  if (g_ready.load(std::memory_order_relaxed)) return true;
  if (g_init_failed) return false;
  options_load();
  // The fewest slots are tried even above half the limit: a tight limit then works if it can.
  std::size_t slots = slots_for_limit() > kMinSlotCount ? slots_for_limit() : kMinSlotCount;
  void* range = reserve_slots(slots);
  while (!range && slots / 2 >= kMinSlotCount) range = reserve_slots(slots /= 2);
  if (!range) {
    g_init_failed = true;
    report_no_address_space(kMinSlotCount * kReserveBytesPerSlot, os::address_space_limit());
    return false;
  }
  g_slot_count = static_cast<std::uint32_t>(slots);
  // zone_of reads g_range_bytes and g_base unlocked: with g_base still kNoBase, every user
  // pointer lies far outside any range.
  g_range_bytes = slots * kZoneSlotBytes;
  // Once for every page to come: commits keep the advice (os::commit).
  os::advise_user(range, g_range_bytes);
  os::advise_bitmap(g_bitmaps.base(), g_bitmaps.size());
  g_free_runs = static_cast<SlotRun*>(g_tables.alloc(kMaxFreeRuns * sizeof(SlotRun), kPageBytes));
  if (!g_free_runs) return false;
  g_zones = reinterpret_cast<Zone*>(g_zone_table.base());
  zone_set_secret(os::random_u64());
  zone_set_moves_span_mappings(os::moves_span_mappings());
  g_base = reinterpret_cast<std::uintptr_t>(range);
  g_ready.store(true, std::memory_order_release);
  return true;
}

std::uint32_t root_take_slots(std::uint32_t count) {
  // First fit among runs freed by big allocations, then fresh slots.
  for (std::uint32_t i = 0; i < g_free_run_count; ++i) {
    SlotRun& r = g_free_runs[i];
    if (r.count < count) continue;
    std::uint32_t first = r.first;
    r.first += count;
    r.count -= count;
    if (r.count == 0) r = g_free_runs[--g_free_run_count];
    return first;
  }
  if (g_next_slot + count > g_slot_count) return kNoZone;
  if (!g_zone_table.commit_prefix(std::size_t{g_next_slot + count} * sizeof(Zone))) return kNoZone;
  std::uint32_t first = g_next_slot;
  g_next_slot += count;
  return first;
}

void root_give_slots(std::uint32_t first, std::uint32_t count) {
  for (std::uint32_t s = first; s < first + count; ++s) g_zones[s].kind = SlotKind::kUnused;
  if (first + count == g_next_slot) {
    g_next_slot = first;
    return;
  }
  // A full table only strands address space, never memory: the slots stay reserved.
  if (g_free_run_count < kMaxFreeRuns) g_free_runs[g_free_run_count++] = SlotRun{first, count};
}

Zone* root_new_zone(unsigned cls, const void* owner) {
  LockGuard guard(g_lock);
  std::uint32_t slot = root_take_slots(1);
  if (slot == kNoZone) return nullptr;
  std::size_t bitmap_bytes = zone_bitmap_bytes(cls);
  auto* bitmap = static_cast<std::uint64_t*>(g_bitmaps.alloc(bitmap_bytes, 64));
  if (!bitmap) {
    root_give_slots(slot, 1);
    return nullptr;
  }
  Zone& z = g_zones[slot];
  zone_init(z, slot, slot_base(slot), cls, bitmap, owner);
  ++g_zone_count;
  return &z;
}

RootStats root_stats() {
  LockGuard guard(g_lock);
  RootStats s{};
  s.zones = g_zone_count;
  s.slots_used = g_next_slot;
  big_stats_locked(s.big_live, s.big_cached_bytes);
  s.metadata_bytes = g_bitmaps.used() + std::size_t{g_next_slot} * sizeof(Zone);
  return s;
}

void root_prefork() { g_lock.lock(); }

void root_postfork(bool child) {
  if (child) g_lock.reset_in_child();
  else g_lock.unlock();
}

}  // namespace iso
