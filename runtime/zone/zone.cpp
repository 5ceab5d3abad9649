#include "runtime/zone/zone.hpp"

#include <algorithm>

#include "runtime/platform.hpp"

namespace iso {
namespace {

std::uint64_t g_secret = 0x6a09e667f3bcc908ull;
// Whether one mremap may move a range made of several mappings (Linux 6.17 and later).
bool g_moves_span_mappings = false;

std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Canary value of a chunk: the zone's secret and the address, so a value leaked from one
// chunk does not forge another chunk's canary without also revealing the address.
std::uint64_t canary_value(const Zone& z, std::uintptr_t chunk) { return z.canary_secret ^ chunk; }

// The canary of each group of kCanaryGroupChunks (two bitmap words) sits at a secret offset
// in the group, never first or last in its word: a chunk's neighbour in another word is then
// never a canary, and free checks only the neighbours its own bitmap word holds.
static_assert(kCanaryGroupChunks == 2 * kChunksPerWord);
std::uint32_t canary_index(const Zone& z, std::uint32_t group) {
  constexpr std::uint32_t kInner = kChunksPerWord - 2;  // positions 1 .. 30 of a word
  std::uint64_t r = mix(g_secret ^ (std::uint64_t{z.id} << 32) ^ group);
  auto pos = static_cast<std::uint32_t>(r % (2 * kInner));
  return group * kCanaryGroupChunks + pos / kInner * kChunksPerWord + pos % kInner + 1;
}

void write_canary(Zone& z, std::uint32_t idx) {
  std::uintptr_t c = zone_chunk_addr(z, idx);
  std::uint64_t v = canary_value(z, c);
  std::memcpy(reinterpret_cast<void*>(c), &v, sizeof v);
  std::memcpy(reinterpret_cast<void*>(c + z.chunk_bytes() - sizeof v), &v, sizeof v);
  set_chunk_state(z.bitmap, idx, kChunkCanary);
}

void mark_summary(Zone& z, std::uint32_t first_chunk, std::uint32_t end_chunk) {
  for (std::uint32_t w = first_chunk / kChunksPerWord; w * kChunksPerWord < end_chunk; ++w)
    z.summary[w >> 6] |= std::uint64_t{1} << (w & 63);
}

// Marks chunks [first, end) with state (words filled whole where possible).
void fill_states(Zone& z, std::uint32_t first, std::uint32_t end, std::uint64_t state) {
  std::uint32_t i = first;
  for (; i < end && (i % kChunksPerWord) != 0; ++i) set_chunk_state(z.bitmap, i, state);
  std::uint64_t word = state * kLowBits;  // the state repeated in every pair of bits
  for (; i + kChunksPerWord <= end; i += kChunksPerWord) z.bitmap[i / kChunksPerWord] = word;
  for (; i < end; ++i) set_chunk_state(z.bitmap, i, state);
}

void record_piece(Zone& z, std::size_t offset) {
  if (z.piece_count == kMaxZonePieces) {
    z.pieces_lost = true;
    return;
  }
  z.piece_start[z.piece_count++] = static_cast<std::uint32_t>(offset);
}

// Commits the next step of user pages; false when the zone is fully committed.
bool zone_grow(Zone& z, const PageSupply* supply) {
  std::size_t limit = std::size_t{z.chunk_count()} * z.chunk_bytes();
  limit = (limit + kPageBytes - 1) & ~(kPageBytes - 1);
  if (z.committed_bytes >= limit) return false;
  // A one-page first step, then a zone that keeps growing catches up fast (see config.hpp).
  std::size_t step = z.committed_bytes < kCommitFirstStepBytes ? kCommitFirstStepBytes
                                                                : 3 * z.committed_bytes;
  if (z.committed_bytes >= kCommitQuadrupleBelowBytes) step = z.committed_bytes;
  // A class that filled a zone is likely to fill the next: one syscall, not nine.
  if (z.grow_fast) step = kCommitMaxStepBytes;
  if (step > kCommitMaxStepBytes) step = kCommitMaxStepBytes;
  // Big chunks: a step always holds at least one whole new chunk.
  std::size_t need = std::size_t{z.committed_chunks + 1} * z.chunk_bytes();
  if (z.committed_bytes + step < need) step = need - z.committed_bytes;
  step = (step + kPageBytes - 1) & ~(kPageBytes - 1);
  if (z.committed_bytes + step > limit) step = limit - z.committed_bytes;

  std::uintptr_t at = z.user_base + z.committed_bytes;
  std::size_t moved = 0;
  while (supply && moved < step && z.piece_count < kMaxDonatedPieces) {
    std::size_t got = supply->take(supply->ctx, at + moved, step - moved);
    if (got == 0) break;
    record_piece(z, z.committed_bytes + moved);
    moved += got;
  }
  if (moved < step) {
    void* rest = reinterpret_cast<void*>(at + moved);
    // Small zones fault in as used: prefaulting all their pages would cost RSS, not save
    // faults. So do the common shard's: they hold the light allocations of short threads,
    // whose live chunks cross a doubling step and stay just past it (thread_churn 4000: two
    // zones at 512 KiB resident, each just past its 256 KiB step).
    bool populate = ISOSHARD_PRE_POPULATE_PAGES && !z.common &&
                    (z.committed_bytes >= kPrefaultFromBytes || z.grow_fast);
    if (os::commit(rest, step - moved, populate)) {
      record_piece(z, z.committed_bytes + moved);
    } else {
      if (moved == 0) return false;
      step = moved;  // keep what was donated
    }
  }
  z.committed_bytes += step;

  // States, canaries and summary first, committed_chunks last: a fork in between leaves the
  // child a zone that does not yet use these chunks, rather than fresh-marked old data.
  std::uint32_t first = z.committed_chunks;
  std::uint32_t end = static_cast<std::uint32_t>(z.committed_bytes / z.chunk_bytes());
  if (end > z.chunk_count()) end = z.chunk_count();
  // The bitmap words that hold only new chunks are zero (fresh), often on a page never
  // touched: store the zeros now. Otherwise the first access is a read (the refill's scan, or
  // a canary's state change below), which maps the shared zero page, and the first write
  // faults again to replace it, flushing the TLB of every CPU the process runs on: an IPI
  // each, a VM exit on a VM. In `perf record` of producer/consumer's first 40,000 items
  // those flushes took 1.9% of the samples (0.35% since).
  for (std::uint32_t w = (first + kChunksPerWord - 1) / kChunksPerWord;
       w * kChunksPerWord < end; ++w)
    z.bitmap[w] = 0;
  // Donated pages hold another class's old data: not fresh, so calloc clears them. So may
  // the start of a chunk straddling the old end (left there when the zone donated its tail).
  if (moved) {
    fill_states(z, first, end, kChunkFreed);
  } else if (first < end && std::size_t{first} * z.chunk_bytes() < z.committed_bytes - step) {
    set_chunk_state(z.bitmap, first, kChunkFreed);
  }
#if ISOSHARD_CANARIES
  for (std::uint32_t g = first / kCanaryGroupChunks; g * kCanaryGroupChunks < end; ++g) {
    std::uint32_t c = canary_index(z, g);
    if (c >= first && c < end) write_canary(z, c);
  }
#endif
  mark_summary(z, first, end);
  z.committed_chunks = end;
  if (z.lock_bitmap && first < end) {
    std::uint32_t w = first / kChunksPerWord;
    os::try_lock(&z.bitmap[w], std::size_t{(end - 1) / kChunksPerWord - w + 1} * sizeof(std::uint64_t));
  }
  return true;
}

std::uint64_t next_random(Zone& z) {
  std::uint64_t x = z.rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return z.rng = x;
}

// Moves free chunks found through the summary into the empty cache. The count stays in a
// register until the end (pushed one at a time, every slot's store could have changed it, so
// each push reloaded and stored it), and a word that fits whole is copied without testing
// for room. cachegrind, malloc_free_pair's Batch1000/32: 15.4 instructions a chunk handed
// out before, 10.8 now (10 in the copy loop).
void scan_into_cache(Zone& z) {
  std::uint32_t words = z.bitmap_words();
  std::uint32_t last_word = z.committed_chunks / kChunksPerWord;
  // Summary words past the committed chunks cover none that is free: a zone committed in
  // part (most) would otherwise walk its whole summary, 64 words for 32-byte chunks, on
  // every refill.
  std::uint32_t sum_words = std::min((words + 63) / 64, last_word / 64 + 1);
  std::uint32_t start = static_cast<std::uint32_t>(next_random(z) % sum_words);
  std::uint64_t last_mask = (std::uint64_t{1} << (2 * (z.committed_chunks % kChunksPerWord))) - 1;
  std::uint32_t* const slots = z.cache.slots;
  std::uint32_t n = z.cache.count;
  for (std::uint32_t i = 0; i < sum_words && n < kFreelistCacheSlots; ++i) {
    std::uint32_t s = start + i < sum_words ? start + i : start + i - sum_words;
    std::uint64_t bits = z.summary[s];
    if (bits == 0) continue;  // nothing to take, nothing to write back
    std::uint64_t emptied = 0;  // summary bits of the words taken whole
    while (bits != 0) {
      std::uint32_t w = s * 64 + static_cast<std::uint32_t>(__builtin_ctzll(bits));
      std::uint64_t free = free_chunks_mask(z.bitmap[w]);
      if (w >= last_word) free = w == last_word ? free & last_mask : 0;
      const std::uint32_t first = w * kChunksPerWord;
      if (kFreelistCacheSlots - n >= kChunksPerWord) {  // room for the whole word: no test
        for (; free != 0; free &= free - 1)
          slots[n++] = first + static_cast<std::uint32_t>(__builtin_ctzll(free)) / 2;
      } else {
        for (; free != 0 && n < kFreelistCacheSlots; free &= free - 1)
          slots[n++] = first + static_cast<std::uint32_t>(__builtin_ctzll(free)) / 2;
        if (free != 0) break;  // cache full; the word keeps its summary bit
      }
      emptied |= bits & -bits;
      bits &= bits - 1;
    }
    z.summary[s] &= ~emptied;
  }
  z.cache.count = n;
}

}  // namespace

void zone_set_secret(std::uint64_t secret) { g_secret = secret; }

void zone_set_moves_span_mappings(bool yes) { g_moves_span_mappings = yes; }

std::size_t zone_bitmap_bytes(unsigned cls) {
  std::size_t words = (kClasses[cls].chunk_count + kChunksPerWord - 1) / kChunksPerWord;
  return (words * 8 + 63) & ~std::size_t{63};
}

void zone_init(Zone& z, std::uint32_t id, std::uintptr_t slot_base, unsigned cls,
               std::uint64_t* bitmap, const void* owner) {
  std::memset(static_cast<void*>(&z), 0, offsetof(Zone, summary));
  std::memset(z.summary, 0, sizeof z.summary);
  z.kind = SlotKind::kZone;
  z.cls = static_cast<std::uint8_t>(cls);
  z.fill_step = std::uint64_t{kClasses[cls].chunk_bytes} << 8 | 1;  // batch_fill_step
  z.chunk_count_ = kClasses[cls].chunk_count;
  z.odd_inverse = kClasses[cls].odd_inverse;
  z.odd_shift = kClasses[cls].odd_shift;
  z.id = id;
  z.user_base = slot_base + kPageBytes;
  z.bitmap = bitmap;
  z.owner = owner;
  z.listed = true;
  z.next_avail = kNoZone;
  z.rng = mix(g_secret ^ id) | 1;
  z.canary_secret = mix(g_secret + 0x9e3779b97f4a7c15ull * (std::uint64_t{id} + 1));
  // The bitmap stays untouched until chunks are committed: a zone costs no bitmap pages
  // before it is used (padding past chunk_count is never scanned: see the invariants).
}

bool zone_refill(Zone& z, const PageSupply* supply) {
  scan_into_cache(z);
  while (z.cache.empty()) {
    if (!zone_grow(z, supply)) return false;
    scan_into_cache(z);
  }
  // The scan pushed ascending addresses; popping them lowest first touches one page at a time
  // from the bottom, so pages that never hold a chunk never fault in.
  std::reverse(z.cache.slots, z.cache.slots + z.cache.count);
  return true;
}

void zone_release(Zone& z) {
  if (z.committed_bytes == 0) return;
  std::size_t bytes = z.committed_bytes;
  std::uint32_t words = (z.committed_chunks + kChunksPerWord - 1) / kChunksPerWord;
  for (std::uint32_t w = 0; w < words; ++w) z.bitmap[w] = 0;
  std::memset(z.summary, 0, sizeof z.summary);
  z.cache.count = 0;
  z.committed_bytes = 0;
  z.committed_chunks = 0;
  z.piece_count = 0;
  z.pieces_lost = false;
  z.grow_fast = false;  // an idle class starts small again
  // After the metadata, as in zone_donate_tail.
  os::decommit(reinterpret_cast<void*>(z.user_base), bytes);
}

// Metadata first, syscalls after: a fork between the two then leaves the child a zone that
// owns fewer pages than are mapped (a leak), never one that believes in unmapped pages.
// An empty zone keeps its first step: small zones that empty and refill all the time (a
// thread's few chunks of each class) then never trade pages back and forth, each trade being
// an mremap with its TLB shootdown.
std::size_t zone_donatable_bytes(const Zone& z) {
  if (z.used != 0) return 0;
  std::size_t floor = kDonorFloorBytes;
  if (!g_moves_span_mappings) {  // older kernels: one mremap stays inside one mapping
    if (z.pieces_lost || z.piece_count == 0) return 0;
    if (z.piece_start[z.piece_count - 1] > floor) floor = z.piece_start[z.piece_count - 1];
  }
  return z.committed_bytes > floor ? z.committed_bytes - floor : 0;
}

// Gives up an empty zone's pages from `keep` bytes on: metadata first (see above).
// Returns the first byte given up.
std::uintptr_t shrink_empty(Zone& z, std::size_t keep) {
  std::uint32_t old_chunks = z.committed_chunks;
  z.committed_bytes = keep;
  z.committed_chunks = static_cast<std::uint32_t>(keep / z.chunk_bytes());
  while (z.piece_count > 0 && z.piece_start[z.piece_count - 1] >= keep) --z.piece_count;
  // The zone is empty: what stays committed is all free; forget the rest.
  fill_states(z, z.committed_chunks, old_chunks, kChunkFresh);
  z.cache.count = 0;
  std::memset(z.summary, 0, sizeof z.summary);
  mark_summary(z, 0, z.committed_chunks);
  return z.user_base + keep;
}

std::size_t zone_donate_tail(Zone& z, std::uintptr_t dst, std::size_t max_bytes) {
  std::size_t spare = zone_donatable_bytes(z);
  if (spare == 0) return 0;
  std::size_t n = max_bytes < spare ? max_bytes : spare;
  std::uintptr_t src = shrink_empty(z, z.committed_bytes - n);
  if (os::move_pages(src, dst, n)) return n;
  os::decommit(reinterpret_cast<void*>(src), n);  // inaccessible, still reserved
  return 0;
}

std::size_t zone_trim(Zone& z) {
  if (z.used != 0 || z.committed_bytes <= kPooledZoneKeepBytes) return 0;
  z.grow_fast = false;  // the next thread starts small
  std::size_t n = z.committed_bytes - kPooledZoneKeepBytes;
  os::decommit(reinterpret_cast<void*>(shrink_empty(z, kPooledZoneKeepBytes)), n);
  return n;
}

namespace {

// True when chunks first..last (inclusive) are all free: fresh or freed, low bit clear.
bool chunks_free(const std::uint64_t* bitmap, std::uint32_t first, std::uint32_t last) {
  for (std::uint32_t i = first; i <= last; i = (i | (kChunksPerWord - 1)) + 1) {
    std::uint32_t w = i / kChunksPerWord;
    std::uint32_t hi = std::min(last - w * kChunksPerWord, kChunksPerWord - 1);
    std::uint64_t upto = hi == kChunksPerWord - 1 ? ~std::uint64_t{0}
                                                   : (std::uint64_t{1} << (2 * hi + 2)) - 1;
    std::uint64_t from = ~((std::uint64_t{1} << bitmap_shift(i)) - 1);
    if (bitmap[w] & kLowBits & upto & from) return false;
  }
  return true;
}

}  // namespace

std::size_t zone_discard_free_pages(Zone& z) {
  std::size_t pages = z.committed_bytes / kPageBytes;
  if (pages * kPageBytes <= kPooledZoneKeepBytes) return 0;
  std::size_t run = pages;  // first page of the current run of free pages; `pages`: none
  std::size_t discarded = 0;
  for (std::size_t pg = kPooledZoneKeepBytes / kPageBytes; pg <= pages; ++pg) {
    bool free = false;
    if (pg < pages) {
      // Division is fine here: this runs when a shard goes to the pool, not per chunk.
      std::uint32_t first = static_cast<std::uint32_t>(pg * kPageBytes / z.chunk_bytes());
      std::uint32_t last = static_cast<std::uint32_t>(((pg + 1) * kPageBytes - 1) / z.chunk_bytes());
      if (last >= z.committed_chunks) last = z.committed_chunks - 1;
      free = first >= z.committed_chunks || chunks_free(z.bitmap, first, last);
    }
    if (free) {
      if (run == pages) run = pg;
      continue;
    }
    if (run == pages) continue;
    std::size_t from = run * kPageBytes, to = pg * kPageBytes;
    // Pages first, states after: a fork in between leaves zeroed chunks marked freed (they
    // get cleared again), never old data marked fresh.
    os::discard(reinterpret_cast<void*>(z.user_base + from), to - from);
    std::uint32_t whole = static_cast<std::uint32_t>((from + z.chunk_bytes() - 1) / z.chunk_bytes());
    std::uint32_t end = static_cast<std::uint32_t>(std::min<std::size_t>(to / z.chunk_bytes(), z.committed_chunks));
    if (whole < end) fill_states(z, whole, end, kChunkFresh);
    discarded += to - from;
    run = pages;
  }
  return discarded;
}

void zone_rebuild(Zone& z) {
  // Each bitmap word was written whole, so the bitmap is the truth below committed_chunks;
  // past it a grow cut short may have left states (it writes them before publishing).
  fill_states(z, z.committed_chunks, z.chunk_count(), kChunkFresh);
  while (z.piece_count > 0 && z.piece_start[z.piece_count - 1] >= z.committed_bytes) --z.piece_count;
  z.cache.count = 0;
  z.used = 0;
  for (std::uint32_t i = 0; i < z.committed_chunks; ++i)
    z.used += chunk_state(z.bitmap, i) == kChunkInUse;
  std::memset(z.summary, 0, sizeof z.summary);
  mark_summary(z, 0, z.committed_chunks);
  z.listed = true;
  z.next_avail = kNoZone;
  z.donor_listed = false;
  z.next_donor = kNoZone;
}

void zone_check_canary(const Zone& z, std::uint32_t idx) {
  if (idx >= z.committed_chunks) return;  // not committed: nothing to check
  std::uintptr_t c = zone_chunk_addr(z, idx);
  std::uint64_t head, tail, want = canary_value(z, c);
  std::memcpy(&head, reinterpret_cast<void*>(c), sizeof head);
  std::memcpy(&tail, reinterpret_cast<void*>(c + z.chunk_bytes() - sizeof tail), sizeof tail);
  if (head != want || tail != want) zone_canary_fault(z, idx);
}

void zone_canary_fault(const Zone& z, std::uint32_t idx) {
  fatal(Fault::kCanaryOverwritten, reinterpret_cast<void*>(zone_chunk_addr(z, idx)), z.id,
        z.chunk_bytes());
}

void zone_bad_free(const Zone& z, const void* p, std::uint64_t state) {
  fatal(state == kChunkFreed ? Fault::kDoubleFree : Fault::kInvalidFree, p, z.id,
        z.chunk_bytes());
}

std::uint32_t zone_verify(const Zone& z) {
  std::uint32_t in_use = 0;
  for (std::uint32_t i = 0; i < z.chunk_count(); ++i) {
    std::uint64_t s = chunk_state(z.bitmap, i);
    if (i >= z.committed_chunks && s != kChunkFresh)
      fatal(Fault::kCorruptMetadata, reinterpret_cast<void*>(zone_chunk_addr(z, i)), z.id,
            z.chunk_bytes());
    if (s == kChunkInUse) ++in_use;
    if (s == kChunkCanary) zone_check_canary(z, i);
  }
  bool bad = in_use != z.used || z.committed_chunks > z.chunk_count() ||
             z.cache.count > kFreelistCacheSlots;
  for (std::uint32_t k = 0; !bad && k < z.cache.count; ++k) {
    std::uint32_t idx = z.cache.slots[k];
    bad = idx >= z.committed_chunks || (chunk_state(z.bitmap, idx) & 1u) != 0;
    for (std::uint32_t j = 0; !bad && j < k; ++j) bad = z.cache.slots[j] == idx;
  }
  // Every free chunk outside the cache is findable: its word's summary bit is set.
  for (std::uint32_t w = 0; !bad && w * kChunksPerWord < z.committed_chunks; ++w) {
    std::uint64_t free = free_chunks_mask(z.bitmap[w]);
    for (std::uint32_t k = 0; k < z.cache.count; ++k) {
      std::uint32_t c = z.cache.slots[k];
      if (c / kChunksPerWord == w) free &= ~(std::uint64_t{1} << bitmap_shift(c));
    }
    std::uint32_t past = z.committed_chunks - w * kChunksPerWord;  // committed chunks from w on
    if (past < kChunksPerWord) free &= (std::uint64_t{1} << (2 * past)) - 1;
    bad = free != 0 && (z.summary[w >> 6] >> (w & 63) & 1) == 0;
  }
  if (bad) fatal(Fault::kCorruptMetadata, reinterpret_cast<void*>(z.user_base), z.id, z.chunk_bytes());
  return in_use;
}

}  // namespace iso
