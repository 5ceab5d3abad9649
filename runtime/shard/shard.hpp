// A shard: one thread's zones per size class, its cross-thread inbox and outboxes.
//
// Invariants:
//   current[c]     is never null: a zone of class c owned by this shard, or the empty zone
//                  (whose cache is always empty), so the hot path tests nothing else
//   a zone of this shard is listed (current, or on avail[c]) whenever it may hold a free
//                  chunk; an unlisted zone is full, and the free that ends that joins it to
//                  avail[c]
//   donors         lists zones that were empty when listed (donor_listed set), newest
//                  first; entries reused since are dropped when met. donor_bytes estimates
//                  their committed bytes; an emptied non-current zone that would push it
//                  past retain_bytes has its pages released instead, and donors older than
//                  retain_ms are released by the next slow path (no background thread)
//   only the bound thread touches anything here but the inbox, which any thread pushes to
#pragma once
#include <atomic>
#include <cstdint>

#include "runtime/config.hpp"
#include "runtime/shard/remote_batch.hpp"
#include "runtime/shard/remote_inbox.hpp"
#include "runtime/zone/size_class.hpp"
#include "runtime/zone/zone.hpp"

namespace iso {

// What the hot path reads. The sentinel is one of these, constant-initialised, so a thread
// that never allocated needs no "initialised?" branch: its caches are empty.
struct ShardFront {
  Zone* current[kClassCount];
  // Local frees left before the next look at the inbox and the donors: a thread that only
  // frees still takes its chunks back and returns idle pages.
  std::uint32_t frees_until_chores;
  // Open batches, direct-mapped by destination tag (shard id + 1). A remote free's one test
  // is that outbox[owner_tag % kOutboxCount] is open for owner_tag. A closed outbox holds
  // g_no_batch, whose tag is no shard's; all of the sentinel's are closed, and no batch is
  // opened for owner_tag 0 (common zones, big and untaken slots). So unbound threads, common
  // chunks, big allocations and stray pointers fail it without tests of their own.
  RemoteBatch* outbox[kOutboxCount];
};

struct Shard : ShardFront {
  std::uint32_t id;
  std::atomic<std::uint32_t> pool_link;   // shard pool fallback list
  std::atomic<bool> bound;                // held: by its thread, or by a thread trimming it
  // Pooled with its pages untrimmed since this time (0: bound, or trimmed).
  std::atomic<std::uint64_t> untrimmed_since_ms;
  bool lock_metadata;                     // the main thread's: default zones mlocked
  bool common;                            // a stripe of the common shard (never pooled)
  std::uint8_t stripe;                    // which one
  std::uint32_t avail[kClassCount];       // zones with free chunks besides current
  std::uint32_t donors;                   // head of the donor list (zone ids)
  std::size_t donor_bytes;
  std::uint64_t last_purge_ms;
  std::uint64_t open_outboxes;            // bit i: outbox[i] holds a batch
  std::uint32_t slow_paths_since_flush;   // allocation slow paths with batches left open
  std::uint32_t spare_batches;            // drained batches kept for sending (id + 1 list)
  std::uint32_t spare_count;
  std::uint64_t remote_frees_sent;
  std::uint64_t remote_batches_sent;
  std::uint64_t remote_frees_received;
  std::uint64_t zones_released;
  RemoteInbox inbox;
};

extern constinit Zone g_empty_zone ISO_HIDDEN;
extern constinit ShardFront g_sentinel_shard ISO_HIDDEN;
// Initial-exec TLS: one %fs-relative load, no __tls_get_addr call.
extern thread_local constinit ShardFront* t_shard ISO_HIDDEN [[gnu::tls_model("initial-exec")]];

ISO_ALWAYS_INLINE bool is_sentinel(const ShardFront* s) { return s == &g_sentinel_shard; }

}  // namespace iso

namespace iso {

// --- shard_pool.cpp: binding threads to shards ---------------------------------------------
// Sets up the shard table and pool (idempotent); false when the runtime cannot initialise.
bool shard_init();
// Binds the calling thread to a pooled shard (drained first) or a new one; nullptr when
// the runtime cannot initialise.
Shard* shard_bind();
// The library constructor: binds the main thread (if it is not yet) and gives its shard the
// default zones, their metadata mlocked, as in the seed.
Shard* shard_bind_main();
// Flushes the thread's outboxes and returns its shard to the pool.
void shard_release_current();
Shard* shard_by_id(std::uint32_t id);
std::uint32_t shard_count();      // shards ever created
std::uint32_t shards_pooled();    // of those, released and waiting for a thread
// Thread exit and fork wiring; called once from the library constructor (idempotent).
void shard_install_hooks();
// True once this thread's shard was released at thread exit.
bool shard_thread_exited();
// A new shard, not yet bound (takes the shard-init lock); nullptr when out of metadata.
Shard* shard_create();
// Trims the pooled shards that have waited retain_ms since their thread exited (all pooled
// shards when `all`): each takes in its inbox and gives back pages as shard_trim_for_pool
// says. Unless `all`, at most once per retain_ms / 2 in the whole process. Returns the bytes
// given back.
std::size_t shard_trim_pooled(std::uint64_t now, bool all);
// Whether some pooled shard is still untrimmed (a hint: read without ordering).
bool shard_pool_trim_pending();

// --- common_shard.cpp: the zones all threads share, under a lock per stripe ----------------
// A thread takes its first g_options.light_allocs allocations of each class from the common
// shard, bound or not: a short-lived thread, or one that uses a class a few times, costs no
// zone of that class (and a thread that only ever allocates lightly, no shard at all), so
// thread churn does not multiply zones. True when this allocation of cls is such a one.
bool shard_take_light(unsigned cls);
// Whether a zone owner (a Shard, or null) is a stripe of the common shard.
bool shard_is_common(const void* owner);
// Allocation for a thread past its exit release, or of a class its thread allocates lightly.
ISO_COLD void* shard_alloc_common(unsigned cls, bool zero);
// Frees a chunk of a common zone.
ISO_COLD void shard_free_common(Zone* z, void* p);
// Whether the common shard holds empty zones (a hint: read without its lock).
bool common_shard_has_donors();
// Zones the common shard's stripes have made; new_zone counts them.
std::uint32_t common_shard_zones();
void common_shard_count_zone();
// Releases the common shard's empty zones older than retain_ms (all of them when `all`),
// unless another thread holds its lock. Any bound thread's purge calls it: after a process's
// last light allocation the common shard's own slow path never runs again. Returns the
// zones released.
std::uint64_t common_shard_purge(bool all = false);
// shard_verify of the common shard (aborts on corruption).
void shard_verify_common();
void common_shard_prefork();
void common_shard_postfork(bool child);

// --- shard_alloc.cpp: slow paths ---------------------------------------------------------
// Allocation when the current zone's cache is empty (or the thread is unbound); nullptr
// with errno ENOMEM when no memory can be had.
ISO_COLD void* shard_alloc_slow(unsigned cls, bool zero);
// A free made a zone unlisted-but-free or empty.
ISO_COLD void shard_zone_event(Shard* s, Zone* z);
// Every kFreesPerChores local frees: drain the inbox, release old donors.
ISO_COLD void shard_free_chores(Shard* s);
// After a local free into z that left it unlisted-but-free or empty, or used up
// frees_until_chores: shard_note_free, then the chores if due.
ISO_COLD void shard_free_owned_rest(Shard* s, Zone* z);
// A free in slot z (not null) that is not in the zones of s, the calling thread's shard: most
// often another shard's chunk, which goes into the open batch for its owner; else
// shard_free_slow.
ISO_COLD void shard_free_remote(Zone* z, void* p, ShardFront* s);
// Every other free: null and foreign pointers (z null), big and common chunks, bad
// pointers, unbound and exited threads, and a remote free that opens a batch.
ISO_COLD void shard_free_slow(Zone* z, void* p);
// Hands every chunk in the inbox back to its zone.
void shard_drain_inbox(Shard* s);
// Sends every open outbox batch to its destination.
void shard_flush_outboxes(Shard* s);
// Chunks the shard's thread has freed into other shards' batches, sent or still open.
std::uint64_t shard_remote_frees_sent(const Shard* s);
// Forgets the outboxes and spare batches of a shard whose thread vanished in a fork (they
// may be half-written): their chunks stay allocated, a bounded leak.
void shard_drop_outboxes(Shard* s);
// Releases donor zones empty for longer than retain_ms (all of them when `all`), and those
// of the common shard when it is free; at most every retain_ms / 2 unless `all`.
void shard_purge_donors(Shard* s, bool all);
// A shard that waited in the pool for retain_ms: past the first kPooledZoneKeepBytes of each
// zone, the empty zones give all their pages back and the others every page without a chunk
// in use or a canary, so a pooled shard holds what other threads still use of it, not what
// its last thread once touched. Returns the bytes given back.
std::size_t shard_trim_for_pool(Shard* s);
// Creates the shard's default zones (common sizes) where it has none of the class yet.
void shard_make_default_zones(Shard* s);
// Aborts on a broken invariant in any of the shard's zones; returns the chunks in use.
std::uint64_t shard_verify(Shard* s);

}  // namespace iso
