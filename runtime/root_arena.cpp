#include "runtime/root_arena.hpp"

#include <sys/mman.h>

#include <atomic>

#include "runtime/big_alloc.hpp"
#include "runtime/metadata_arena.hpp"
#include "runtime/options.hpp"
#include "runtime/platform.hpp"

namespace iso {

constinit std::uintptr_t g_base = kNoBase;
constinit Zone* g_zones = nullptr;

namespace {

struct SlotRun {
  std::uint32_t first;
  std::uint32_t count;
};
inline constexpr std::uint32_t kMaxFreeRuns = 1u << 16;

constinit SpinLock g_lock;
constinit std::atomic<bool> g_ready{false};
constinit std::uint32_t g_next_slot = 0;
constinit std::uint32_t g_zone_count = 0;
constinit std::uint32_t g_free_run_count = 0;
constinit SlotRun* g_free_runs = nullptr;
constinit MetadataArena g_bitmaps;
constinit MetadataArena g_tables;
// g_zones: made writable as slots are taken (see MetadataArena); the rest reads as unused.
constinit MetadataArena g_zone_table;

}  // namespace

SpinLock& root_lock() { return g_lock; }
bool root_ready() { return g_ready.load(std::memory_order_acquire); }

bool root_init() {
  if (root_ready()) return true;
  LockGuard guard(g_lock);
  if (g_ready.load(std::memory_order_relaxed)) return true;
  options_load();
  void* range = os::reserve(kReservedBytes);
  if (!range) return false;
  std::size_t zone_table = kSlotCount * sizeof(Zone);
  std::size_t runs_table = kMaxFreeRuns * sizeof(SlotRun);
  zone_table = (zone_table + kPageBytes - 1) & ~(kPageBytes - 1);
  if (!g_zone_table.init(zone_table) || !g_tables.init(runs_table) ||
      !g_bitmaps.init(kBitmapArenaBytes))
    return false;
  // Once for every page to come: commits keep the advice (os::commit).
  os::advise_user(range, kReservedBytes);
  os::advise_bitmap(g_bitmaps.base(), kBitmapArenaBytes);
  g_free_runs = static_cast<SlotRun*>(g_tables.alloc(runs_table, kPageBytes));
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
  if (g_next_slot + count > kSlotCount) return kNoZone;
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
