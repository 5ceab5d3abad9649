// The shard's slow paths: refilling and switching zones, releasing empty zones, and routing
// frees of chunks that belong to another shard.
#include <algorithm>
#include <cerrno>

#include "runtime/options.hpp"
#include "runtime/platform.hpp"
#include "runtime/shard/alloc_path.hpp"
#include "runtime/root_arena.hpp"
#include "runtime/shard/shard.hpp"

namespace iso {
namespace {

// Common sizes get a zone as soon as the shard exists (the seed's "default zones").
constexpr std::uint32_t kDefaultZoneBytes[] = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};

// PageSupply::take: one run of resident pages from the shard's empty zones, newest first.
// Runs much smaller than asked for are passed over (left to the time-based purge): each run
// becomes a separate mapping in the taker, and a zone of many small pieces stops donating.
std::size_t take_from_donors(void* ctx, std::uintptr_t dst, std::size_t bytes) {
  auto* s = static_cast<Shard*>(ctx);
  const Zone* taker = zone_of(reinterpret_cast<void*>(dst));
  std::size_t worth = bytes < kMinDonationBytes ? bytes : kMinDonationBytes;
  std::uint32_t* link = &s->donors;
  for (unsigned looked = 0; *link != kNoZone && looked < kMaxDonorsLooked; ++looked) {
    Zone* d = &g_zones[*link];
    std::size_t can = d == taker ? 0 : zone_donatable_bytes(*d);
    if (can == 0) {  // reused, or down to its floor: off the list
      *link = d->next_donor;
      d->donor_listed = false;
      d->next_donor = kNoZone;
      continue;
    }
    if (can >= worth) {
      std::size_t got = zone_donate_tail(*d, dst, bytes);
      s->donor_bytes = got < s->donor_bytes ? s->donor_bytes - got : 0;
      return got;
    }
    link = &d->next_donor;
  }
  return 0;
}

// A new zone of class cls owned by s; nullptr when out of address space.
Zone* new_zone(Shard* s, unsigned cls) {
  Zone* z = root_new_zone(cls, s);
  if (z) {  // before any chunk of it is handed out
    z->common = shard_is_common(s);
    z->owner_tag = z->common ? 0 : s->id + 1;
    if (z->common) common_shard_count_zone();
  }
  return z;
}

bool refill(Shard* s, Zone* z) {
  PageSupply supply{take_from_donors, s};
  return zone_refill(*z, &supply);
}

// A zone of class cls with a non-empty cache, now the shard's current zone; nullptr on OOM.
Zone* switch_zone(Shard* s, unsigned cls) {
  Zone* old = s->current[cls];
  bool filled = old != &g_empty_zone;  // the class filled a zone: the next grows fast
  if (filled) old->listed = false;  // full: the next free relists it
  while (s->avail[cls] != kNoZone) {
    Zone* z = &g_zones[s->avail[cls]];
    s->avail[cls] = z->next_avail;
    z->next_avail = kNoZone;
    z->grow_fast |= filled;
    if (refill(s, z)) {
      s->current[cls] = z;
      return z;
    }
    z->listed = false;  // could not commit more pages: treat as full
  }
  Zone* z = new_zone(s, cls);
  if (z) z->grow_fast = filled;
  if (!z || !refill(s, z)) {
    s->current[cls] = &g_empty_zone;
    if (z) {  // keep it for later, when memory may be available again
      z->next_avail = s->avail[cls];
      s->avail[cls] = z->id;
    }
    return nullptr;
  }
  s->current[cls] = z;
  return z;
}

// Sends a batch to its destination's inbox.
void send(RemoteBatch* b) {
  shard_by_id(b->dest_tag - 1)->inbox.push(b);
}
void send_from(Shard* from, RemoteBatch* b) {
  ++from->remote_batches_sent;
  from->remote_frees_sent += b->count();
  send(b);
}

// A batch for s to fill: one it drained earlier, else one from the global pool. Senders
// and receivers are mostly the same threads, so the global pool's line seldom moves.
RemoteBatch* take_batch(Shard* s) {
  if (s->spare_count == 0) return batch_get();
  RemoteBatch* b = batch_by_id(s->spare_batches - 1);
  s->spare_batches = b->link.load(std::memory_order_relaxed);
  --s->spare_count;
  return b;
}

// A batch s has drained: kept for its own sends, or back to the global pool.
void recycle_batch(Shard* s, RemoteBatch* b) {
  if (s->spare_count == kSpareBatches) return batch_put(b);
  b->link.store(s->spare_batches, std::memory_order_relaxed);
  s->spare_batches = b->id + 1;
  ++s->spare_count;
}

// Sends the batch in outbox i and leaves the outbox empty.
void close_outbox(Shard* from, unsigned i) {
  send_from(from, from->outbox[i]);
  from->outbox[i] = &g_no_batch;
  from->open_outboxes &= ~(std::uint64_t{1} << i);
}

// Opens a batch for the shard tagged dest_tag in its outbox, sending the one the outbox held
// (for another shard).
ISO_COLD void open_batch(Shard* from, std::uint32_t dest_tag, const void* p) {
  unsigned i = dest_tag % kOutboxCount;
  if (from->outbox[i] != &g_no_batch) close_outbox(from, i);
  RemoteBatch* b = take_batch(from);
  if (!b) fatal(Fault::kOutOfMetadata, p, -1);
  b->dest_tag = dest_tag;
  b->fill = kEmptyBatchFill;
  from->outbox[i] = b;
  from->open_outboxes |= std::uint64_t{1} << i;
}

// Puts p, freed from zone z, in from's open batch for the zone's owner, sending the batch
// once it is full; false (nothing done) when no batch for that owner is open: always for the
// sentinel, and for zones no batch goes to (owner_tag 0). See ShardFront::outbox.
ISO_ALWAYS_INLINE bool append_remote(ShardFront* from, const Zone* z, const void* p) {
  std::uint32_t tag = z->owner_tag;
  unsigned i = tag % kOutboxCount;
  RemoteBatch* b = from->outbox[i];
  if (ISO_UNLIKELY(b->dest_tag != tag)) return false;
  std::uint64_t fill = b->fill;
  // Word batch_words(fill) of the batch: entries[] starts past the header words it counts.
  b->entries[batch_words(fill) - kBatchHeaderWords] = reinterpret_cast<std::uintptr_t>(p);
  static_assert(batch_fill_step(48) == (std::uint64_t{48} << 8 | 1), "see Zone::fill_step");
  fill += z->fill_step;
  b->fill = fill;
  if (ISO_UNLIKELY(batch_full(fill))) close_outbox(static_cast<Shard*>(from), i);  // a real one
  return true;
}

// Puts p, freed from zone z, in the freeing thread's batch for the zone's owner.
void post_remote(Shard* from, const Zone* z, const void* p) {
  if (append_remote(from, z, p)) return;
  open_batch(from, z->owner_tag, p);
  append_remote(from, z, p);
}

// A thread past its exit release has no outbox: its frees go home one per batch.
void post_remote_direct(const Zone* z, const void* p) {
  RemoteBatch* b = batch_get();
  if (!b) fatal(Fault::kOutOfMetadata, p, -1);
  b->dest_tag = z->owner_tag;
  b->fill = kEmptyBatchFill + z->fill_step;
  b->entries[0] = reinterpret_cast<std::uintptr_t>(p);
  send(b);
}

// What a sweep of the donor list does with an empty zone.
enum class EmptyDonors { kKeep, kReleaseOld, kReleaseAll };

// Rebuilds the donor list and donor_bytes: drops the zones used again since they were
// listed, keeps or releases the empty ones as `what` says (old: listed retain_ms or more
// before now).
void sweep_donors(Shard* s, EmptyDonors what, std::uint64_t now) {
  std::uint32_t id = s->donors;
  std::uint32_t* link = &s->donors;
  s->donor_bytes = 0;
  while (id != kNoZone) {
    Zone* d = &g_zones[id];
    id = d->next_donor;
    bool empty = d->used == 0 && d->committed_bytes != 0;
    bool keep = empty && (what == EmptyDonors::kKeep ||
                          (what == EmptyDonors::kReleaseOld &&
                           now - d->donor_since_ms < g_options.retain_ms));
    if (keep) {
      s->donor_bytes += d->committed_bytes;
      *link = d->id;
      link = &d->next_donor;
      continue;
    }
    if (empty) {
      zone_release(*d);
      ++s->zones_released;
    }
    d->donor_listed = false;
    d->next_donor = kNoZone;
  }
  *link = kNoZone;
}

// Frees of big allocations and of addresses in slots that hold nothing.
ISO_COLD void free_outside_zones(Zone* z, void* p) {
  switch (z->kind) {
    case SlotKind::kBig:
    case SlotKind::kBigTail:
      return root_big_free(*z, p);
    case SlotKind::kUnused:
    case SlotKind::kZone:
      break;
  }
  fatal(Fault::kInvalidFree, p, -1);
}

}  // namespace

constinit Zone g_empty_zone = {};

// The empty zone stands in for every class until a shard has a zone of it. Constant
// initialised: malloc may run before any constructor.
static constexpr ShardFront make_sentinel() {
  ShardFront s{};
  for (Zone*& z : s.current) z = &g_empty_zone;
  for (RemoteBatch*& b : s.outbox) b = &g_no_batch;
  return s;
}
constinit ShardFront g_sentinel_shard = make_sentinel();
thread_local constinit ShardFront* t_shard = &g_sentinel_shard;

void shard_make_default_zones(Shard* s) {
  for (std::uint32_t bytes : kDefaultZoneBytes) {
    unsigned cls = size_class_of(bytes);
    if (s->current[cls] != &g_empty_zone) continue;
    Zone* z = new_zone(s, cls);
    if (!z) return;
    s->current[cls] = z;
#if ISOSHARD_MLOCK_METADATA
    // Walked on every alloc and free of the main thread: keep it resident (may fail quietly).
    // The bitmap is locked as the zone grows: locking all of it at once would make a 16-byte
    // class's 64 KiB resident before it holds a chunk.
    if (s->lock_metadata) {
      os::try_lock(z, sizeof(Zone));
      z->lock_bitmap = true;
    }
#endif
  }
}

void* shard_alloc_slow(unsigned cls, bool zero) {
  ShardFront* f = t_shard;
  if (is_sentinel(f)) {
    // A thread binds a shard only once it allocates more than lightly.
    if (shard_thread_exited() || shard_take_light(cls)) return shard_alloc_common(cls, zero);
    f = shard_bind();
    // No shard left to bind (a scaled-down shard arena is full): the common shards serve it.
    if (!f) return shard_alloc_common(cls, zero);
  }
  Shard* s = static_cast<Shard*>(f);
  // Slow paths are where pending work goes out and comes in: a thread that both frees
  // others' chunks and allocates never holds them back for long.
  if (s->open_outboxes != 0 && ++s->slow_paths_since_flush >= kSlowPathsPerFlush)
    shard_flush_outboxes(s);
  if (s->inbox.maybe_nonempty()) shard_drain_inbox(s);
  shard_purge_donors(s, false);
  Zone* z = s->current[cls];
  if (z == &g_empty_zone && !s->lock_metadata && !shard_is_common(s) && shard_take_light(cls))
    return shard_alloc_common(cls, zero);
  if (z->cache.empty()) {
    if (z == &g_empty_zone || !refill(s, z)) z = switch_zone(s, cls);
    if (!z) {
      errno = ENOMEM;
      return nullptr;
    }
  }
  return zero ? zone_pop<true>(*z) : zone_pop<false>(*z);
}

void shard_zone_event(Shard* s, Zone* z) {
  unsigned cls = z->cls;
  if (!z->listed) {
    z->listed = true;
    z->next_avail = s->avail[cls];
    s->avail[cls] = z->id;
  }
  if (z->used != 0 || z->donor_listed) return;
  // An empty zone keeps its pages, for its own class to reuse (a loop that frees all and
  // allocates again faults nothing back in) or to donate to another class, up to the
  // shard's retention budget. The current zone is always kept.
  bool current = z == s->current[cls];
  auto over_budget = [&] { return s->donor_bytes + z->committed_bytes > g_options.retain_bytes; };
  // donor_bytes only drifts up (a listed zone used again counts until a sweep meets it):
  // count again before releasing on its word.
  if (!current && over_budget()) sweep_donors(s, EmptyDonors::kKeep, 0);
  if (!current && over_budget()) {
    zone_release(*z);
    ++s->zones_released;
    return;
  }
  z->donor_listed = true;
  z->next_donor = s->donors;
  s->donors = z->id;
  s->donor_bytes += z->committed_bytes;
  z->donor_since_ms = os::now_ms();
}

void shard_free_slow(Zone* z, void* p) {
  if (!z) {
    if (p == nullptr) return;
    fatal(Fault::kInvalidFree, p, -1);
  }
  if (ISO_UNLIKELY(z->kind != SlotKind::kZone)) return free_outside_zones(z, p);
  if (z->common) return shard_free_common(z, p);
  // Cheap checks here, so the fault names the freeing thread; the owner checks the state.
  std::uint32_t idx;
  if (!zone_chunk_at(*z, p, idx)) zone_bad_free(*z, p, kChunkFresh);
  ShardFront* f = t_shard;
  if (ISO_UNLIKELY(is_sentinel(f))) {
    if (shard_thread_exited()) return post_remote_direct(z, p);
    Shard* s = shard_bind();
    if (!s) return post_remote_direct(z, p);  // as after exit: no shard to batch in
    if (z->owner == s) {  // the shard just bound (from the pool) owns it
      zone_free_at(*z, idx);
      return shard_note_free(s, z);
    }
    return post_remote(s, z, p);
  }
  // A bound thread gets here only for a zone it does not own (shard_free tested that).
  post_remote(static_cast<Shard*>(f), z, p);
}

void shard_free_remote(Zone* z, void* p, ShardFront* s) {
  // One test: an open batch for the zone's owner (see ShardFront::outbox); everything else
  // falls to shard_free_slow. The owner checks that p starts a chunk when it drains the
  // batch, as it checks the chunk's state. Consumers of producer/consumer are bound by their
  // loads of the chunks, and each instruction here shrinks how many of those loads the core
  // overlaps. With the chunk checked here (45 instructions from free's entry) `crossed` took
  // 0.524 s, without (34) 0.437 s, when the host put the two CPUs far apart (medians of 27
  // rounds; docs/DESIGN.md, known limits). 32 now.
  if (ISO_LIKELY(append_remote(s, z, p))) return;
  shard_free_slow(z, p);
}

void shard_free_owned_rest(Shard* s, Zone* z) {
  shard_note_free(s, z);
  if (s->frees_until_chores == 0) shard_free_chores(s);
}

void shard_free_chores(Shard* s) {
  s->frees_until_chores = kFreesPerChores;
  if (s->inbox.maybe_nonempty()) shard_drain_inbox(s);
  shard_purge_donors(s, false);
}

namespace {

// Frees every chunk of a batch sent to s into its zone.
void drain_batch(Shard* s, const RemoteBatch* b) {
  const std::uint32_t count = b->count();
  // In registers: the loop's stores might alias the globals.
  Zone* const zones = g_zones;
  const std::uintptr_t base = g_base;
  for (std::uint32_t i = 0; i < count; ++i) {
    void* p = reinterpret_cast<void*>(b->entries[i]);
    // The sender's zone_of found p in range.
    Zone* z = &zones[(b->entries[i] - base) >> kZoneSlotShift];
    if (ISO_UNLIKELY(z->owner != s)) fatal(Fault::kCorruptMetadata, p, z->id);
    zone_free<FreedTo::kCacheOrSummary>(*z, p);
    shard_note_free(s, z);
  }
  s->remote_frees_received += count;
}

}  // namespace

void shard_drain_inbox(Shard* s) {
  s->inbox.drain([s](RemoteBatch* b) {
    drain_batch(s, b);
    recycle_batch(s, b);
  });
}

void shard_purge_donors(Shard* s, bool all) {
  // Nothing listed here, in the common shard or in the pool: no clock read.
  if (!all && s->donors == kNoZone && !common_shard_has_donors() && !shard_pool_trim_pending())
    return;
  std::uint64_t now = os::now_ms();
  // Measured from the last purge with today's retain_ms: a deadline stored under a longer
  // one (a test's) held the next purge back long after the setting changed.
  if (!all && now - s->last_purge_ms <= g_options.retain_ms / 2) return;
  s->last_purge_ms = now;
  if (!shard_is_common(s)) {
    common_shard_purge();
    shard_trim_pooled(now, false);
  }
  sweep_donors(s, all ? EmptyDonors::kReleaseAll : EmptyDonors::kReleaseOld, now);
}

std::size_t shard_trim_for_pool(Shard* s) {
  // Every zone that may hold a free chunk is listed: the current one or on avail.
  std::size_t bytes = 0;
  auto trim = [&bytes](Zone* z) {
    bytes += z->used == 0 ? zone_trim(*z) : zone_discard_free_pages(*z);
  };
  for (unsigned c = 0; c < kClassCount; ++c) {
    if (s->current[c] != &g_empty_zone) trim(s->current[c]);
    for (std::uint32_t id = s->avail[c]; id != kNoZone; id = g_zones[id].next_avail) trim(&g_zones[id]);
  }
  sweep_donors(s, EmptyDonors::kKeep, 0);
  return bytes;
}

void shard_flush_outboxes(Shard* s) {
  s->slow_paths_since_flush = 0;
  while (s->open_outboxes != 0)
    close_outbox(s, static_cast<unsigned>(__builtin_ctzll(s->open_outboxes)));
}

std::uint64_t shard_remote_frees_sent(const Shard* s) {
  std::uint64_t n = s->remote_frees_sent;
  for (std::uint64_t open = s->open_outboxes; open != 0; open &= open - 1)
    n += s->outbox[__builtin_ctzll(open)]->count();
  return n;
}

void shard_drop_outboxes(Shard* s) {
  for (RemoteBatch*& b : s->outbox) b = &g_no_batch;
  s->open_outboxes = 0;
  s->slow_paths_since_flush = 0;
  s->spare_batches = 0;
  s->spare_count = 0;
}

std::uint64_t shard_verify(Shard* s) {
  std::uint64_t in_use = 0;
  for (unsigned c = 0; c < kClassCount; ++c) {
    Zone* cur = s->current[c];
    if (cur != &g_empty_zone) {
      if (cur->owner != s || cur->cls != c || !cur->listed)
        fatal(Fault::kCorruptMetadata, cur, cur->id, cur->chunk_bytes());
    }
  }
  // Every zone this shard owns, found through the root's table.
  RootStats rs = root_stats();
  for (std::uint32_t slot = 0; slot < rs.slots_used; ++slot) {
    Zone& z = g_zones[slot];
    if (z.kind == SlotKind::kZone && z.owner == s) in_use += zone_verify(z);
  }
  return in_use;
}

}  // namespace iso
