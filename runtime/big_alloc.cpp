// Big allocations: requests above the largest size class get their own run of slots.
// The user pointer sits one guard page (or the alignment) past the run's start; the rest
// of the run past the mapping stays PROT_NONE and fences the end. A few freed mappings are
// kept (kBigCacheEntries, kBigCacheBytes) so a loop of big malloc/free makes no syscalls.
#include <cstring>

#include "runtime/big_alloc.hpp"
#include "runtime/platform.hpp"
#include "runtime/root_arena.hpp"

namespace iso {
namespace {

struct CachedBig {
  std::uint32_t first_slot;
  std::uint32_t slots;
  std::size_t mapped_bytes;
};

constinit CachedBig g_cache[kBigCacheEntries] = {};
constinit std::uint32_t g_cache_count = 0;
constinit std::size_t g_cache_bytes = 0;
constinit std::uint32_t g_live = 0;

std::size_t page_round(std::size_t n) { return (n + kPageBytes - 1) & ~(kPageBytes - 1); }

void unmap_run(std::uint32_t first, std::uint32_t slots, std::size_t mapped) {
  os::decommit(reinterpret_cast<void*>(slot_base(first) + kPageBytes), mapped);
  root_give_slots(first, slots);
}

Zone& mark_live(std::uint32_t first, std::uint32_t slots, std::uintptr_t user,
                std::size_t mapped) {
  std::uint32_t head = static_cast<std::uint32_t>((user - g_base) >> kZoneSlotShift);
  for (std::uint32_t s = first; s < first + slots; ++s) {
    g_zones[s].kind = SlotKind::kBigTail;
    g_zones[s].owner = nullptr;
    g_zones[s].owner_tag = 0;     // no batch goes here (see shard_free_remote)
    g_zones[s].chunk_count_ = 0;  // no pointer is a chunk start
  }
  Zone& z = g_zones[head];
  z.kind = SlotKind::kBig;
  z.id = head;
  z.user_base = user;
  z.committed_bytes = mapped;  // bytes usable from user on
  z.big_slots = slots;
  z.next_avail = first;        // the run's first slot
  z.used = 1;
  ++g_live;
  return z;
}

// A cached mapping of at least `bytes` and not wastefully larger.
bool take_cached(std::size_t bytes, CachedBig& out) {
  for (std::uint32_t i = 0; i < g_cache_count; ++i) {
    CachedBig& c = g_cache[i];
    if (c.mapped_bytes >= bytes && c.mapped_bytes / 2 <= bytes) {
      out = c;
      g_cache_bytes -= c.mapped_bytes;
      c = g_cache[--g_cache_count];
      return true;
    }
  }
  return false;
}

}  // namespace

void* root_big_alloc(std::size_t bytes, std::size_t align, bool zero) {
  if (bytes > g_range_bytes / 4 || align > g_range_bytes / 4) return nullptr;
  std::size_t mapped = page_round(bytes);
  LockGuard guard(root_lock());
  CachedBig c;
  if (align <= kPageBytes && take_cached(mapped, c)) {
    std::uintptr_t user = slot_base(c.first_slot) + kPageBytes;
    mark_live(c.first_slot, c.slots, user, c.mapped_bytes);
    if (zero) std::memset(reinterpret_cast<void*>(user), 0, bytes);
    return reinterpret_cast<void*>(user);
  }
  // Leading guard page (or alignment gap), the pages, then at least one trailing guard page.
  std::size_t lead = align > kPageBytes ? align : kPageBytes;
  std::size_t run_bytes = lead + mapped + kPageBytes;
  std::uint32_t slots = static_cast<std::uint32_t>((run_bytes + kZoneSlotBytes - 1) >> kZoneSlotShift);
  std::uint32_t first = root_take_slots(slots);
  if (first == kNoZone) return nullptr;
  std::uintptr_t run = slot_base(first);
  std::uintptr_t user = (run + kPageBytes + align - 1) & ~(align - 1);
  if (!os::commit(reinterpret_cast<void*>(user), mapped, false)) {
    root_give_slots(first, slots);
    return nullptr;
  }
  mark_live(first, slots, user, mapped);
  return reinterpret_cast<void*>(user);
}

void root_big_free(Zone& z, void* p) {
  LockGuard guard(root_lock());
  if (z.kind != SlotKind::kBig || z.user_base != reinterpret_cast<std::uintptr_t>(p))
    fatal(Fault::kInvalidFree, p, z.kind == SlotKind::kUnused ? -1 : long{z.id});
  if (z.used != 1) fatal(Fault::kDoubleFree, p, z.id);
  z.used = 0;
  --g_live;
  std::uint32_t first = z.next_avail, slots = z.big_slots;
  std::size_t mapped = z.committed_bytes;
  bool cacheable = z.user_base == slot_base(first) + kPageBytes && mapped <= kBigCacheBytes / 2;
  if (cacheable) {
    if (g_cache_count == kBigCacheEntries || g_cache_bytes + mapped > kBigCacheBytes) {
      // Evict the oldest entry to make room: recent sizes are the likeliest to recur.
      CachedBig old = g_cache[0];
      g_cache[0] = g_cache[--g_cache_count];
      g_cache_bytes -= old.mapped_bytes;
      unmap_run(old.first_slot, old.slots, old.mapped_bytes);
    }
    if (g_cache_bytes + mapped <= kBigCacheBytes) {
#if ISOSHARD_SANITIZE_CHUNKS
      std::memset(p, 0xde, mapped);
#endif
      g_cache[g_cache_count++] = CachedBig{first, slots, mapped};
      g_cache_bytes += mapped;
      return;  // slots keep kind kBig with used == 0: a second free is a double free
    }
  }
  std::uintptr_t map_start = z.user_base & ~(kPageBytes - 1);
  os::decommit(reinterpret_cast<void*>(map_start), mapped);
  root_give_slots(first, slots);
}

std::size_t root_big_usable(const Zone& z) { return z.committed_bytes; }

void big_stats_locked(std::uint32_t& live, std::size_t& cached_bytes) {
  live = g_live;
  cached_bytes = g_cache_bytes;
}

}  // namespace iso
