// A zone: one 4 MiB slot of same-size chunks, with its metadata kept out of band.
//
// Invariants (checked by zone_verify):
//   used            == number of chunks whose bitmap state is kChunkInUse
//   cache entries   are distinct, below committed_chunks, and in a free state
//   committed_chunks<= chunk_count; chunks at or past it are kChunkFresh (so is the
//                      bitmap's padding past chunk_count: scans stop at committed_chunks)
//   summary bit w   is set for every bitmap word w holding a free chunk that is not in
//                      the cache (it may also be set for words that hold none)
//   only the owner shard's thread writes a zone; other threads read its first cache line,
//   written once when the slot is taken, to check a free and route it home.
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "runtime/config.hpp"
#include "runtime/errors.hpp"
#include "runtime/zone/bitmap.hpp"
#include "runtime/zone/freelist_cache.hpp"
#include "runtime/zone/size_class.hpp"

namespace iso {

enum class SlotKind : std::uint8_t { kUnused = 0, kZone, kBig, kBigTail };

inline constexpr std::uint32_t kNoZone = ~std::uint32_t{0};
inline constexpr std::uint32_t kMaxBitmapWords =
    (kClasses[0].chunk_count + kChunksPerWord - 1) / kChunksPerWord;
inline constexpr std::uint32_t kSummaryWords = (kMaxBitmapWords + 63) / 64;
// Pads a zone's table entry to 31 cache lines (1984 bytes). At 32 lines (2 KiB, when the slot
// lookup was a shift) every zone's first line fell in one of 2 of the L1's 64 sets, and its
// second line in 2 others, 24 lines each on a 12-way L1, where a producer of 28 size classes
// and a consumer freeing into another producer's 28, sharing a CPU, read 56 first lines.
// With the odd stride the lookup multiplies (shl, sub, shl), and producer/consumer ran
// faster in 47 of 60 interleaved `crossed` rounds (docs/DESIGN.md).
inline constexpr std::size_t kZonePadBytes = 64;

// Where each separately mapped piece of a zone's committed pages starts. Before Linux 6.17
// mremap moves a range only inside one mapping, and a failed one can leave a hole another
// thread's mmap could land in, so on such kernels a zone donates from its last piece alone.
inline constexpr unsigned kMaxZonePieces = 48;
// Past this many pieces a zone grows with fresh pages only, so its remaining steps (at most
// a dozen to fill a zone) always find a slot.
inline constexpr unsigned kMaxDonatedPieces = kMaxZonePieces - 12;

// An odd number of cache lines apart in the zone table (see kZonePadBytes), so that the same
// field of different zones falls in different sets of the L1 cache.
struct alignas(64) Zone {
  // Set when the slot is taken, read by any thread (a free finds its way home through them).
  // This cache line is not written while the zone lives, so other threads' frees do not pull
  // it away from the owner: with `used` in it, a producer/consumer pair ran at half speed.
  // The chunk size, chunk_count_, odd_inverse and odd_shift are kClasses[cls] copied here:
  // free reads them without another load.
  SlotKind kind;
  std::uint8_t cls;
  bool common;                 // the common shard's: freed under its lock, never sent home
  std::uint8_t odd_shift;
  std::uint32_t id;            // slot index
  // What one chunk adds to the fill word of a remote batch, batch_fill_step(chunk size):
  // the chunk size from bit 8, 1 below. Ready for the remote free to add.
  std::uint64_t fill_step;
  std::uint32_t chunk_count_;  // 0 in a slot that is not a zone: no pointer is a chunk start
  // The owner's id + 1: a remote free addresses its batch without reading the owner. 0 in
  // every slot no batch may go to (common zones, big and untaken slots): no batch's
  // destination is 0.
  std::uint32_t owner_tag;
  std::uint64_t odd_inverse;
  std::uintptr_t user_base;    // first chunk (big: the user pointer)
  std::uint64_t* bitmap;
  const void* owner;           // the shard whose thread may write this zone
  std::uint64_t canary_secret; // a canary chunk holds canary_secret ^ its address at both ends

  // Owner-only state (big allocations: written under the root lock). What every free reads
  // and writes shares one line with the cache count and its first slots.
  alignas(64) std::uint32_t used;  // chunks in use
  bool listed;                 // the owner's current zone or on its available list
  bool donor_listed;
  FreelistCache cache;
  std::uint32_t committed_chunks;
  std::size_t committed_bytes; // user bytes mapped read-write (big: the mapping's length)
  std::uint32_t next_avail;    // next zone on the owner's available list
  std::uint32_t next_donor;    // next zone on the owner's donor list
  std::uint64_t donor_since_ms;  // when it was listed as a donor
  std::uint32_t big_slots;     // big: slots this allocation spans
  std::uint64_t rng;           // xorshift state for the refill's random start
  std::uint32_t piece_start[kMaxZonePieces];  // byte offsets, ascending
  std::uint8_t piece_count;
  bool pieces_lost;            // more pieces than recorded: donate nothing until released
  bool lock_bitmap;            // a default zone of the main thread: mlock the bitmap as it grows
  bool grow_fast;              // its class just filled a zone of this shard: grow in full
                               // steps (until its pages go back to the OS)
  std::uint64_t summary[kSummaryWords];
  char pad_[kZonePadBytes];

  std::uint32_t chunk_bytes() const { return static_cast<std::uint32_t>(fill_step >> 8); }
  std::uint32_t chunk_count() const { return chunk_count_; }
  std::uint32_t bitmap_words() const {
    return (chunk_count() + kChunksPerWord - 1) / kChunksPerWord;
  }
};

static_assert(sizeof(Zone) % 128 == 64, "an odd number of cache lines: adjust kZonePadBytes");

// Where a growing zone gets resident pages before asking the kernel for fresh ones: the
// owner's empty zones of other classes give theirs up (mremap), so memory moves between size
// classes without being zeroed and faulted again, while the old addresses become PROT_NONE.
struct PageSupply {
  // Moves one run of up to `bytes` (a page multiple) of resident pages to dst, with a single
  // mremap; returns bytes moved (0: nothing left to give).
  std::size_t (*take)(void* ctx, std::uintptr_t dst, std::size_t bytes);
  void* ctx;
};


// --- slow paths (zone.cpp) ---------------------------------------------------------------
void zone_set_secret(std::uint64_t secret);
// Set at init from os::moves_span_mappings(): donations then need not follow piece bounds.
void zone_set_moves_span_mappings(bool yes);
std::size_t zone_bitmap_bytes(unsigned cls);
// Initialises a zone of class cls in slot `id`; bitmap points to zone_bitmap_bytes(cls) zeroed bytes.
void zone_init(Zone& z, std::uint32_t id, std::uintptr_t slot_base, unsigned cls,
               std::uint64_t* bitmap, const void* owner);
// Refills the empty cache from the bitmap, committing more pages when none is free.
// Returns false when the zone is full.
bool zone_refill(Zone& z, const PageSupply* supply = nullptr);
// Bytes an empty zone can give in one run (its last piece above the floor); 0 if in use.
std::size_t zone_donatable_bytes(const Zone& z);
// Moves up to max_bytes of an empty zone's committed pages, from the end of its last piece,
// to dst (one mremap); returns the bytes moved.
std::size_t zone_donate_tail(Zone& z, std::uintptr_t dst, std::size_t max_bytes);
// Returns the zone's pages to the OS and forgets every chunk (zone must be empty).
void zone_release(Zone& z);
// Returns to the OS every committed page past the first kPooledZoneKeepBytes that holds no
// chunk in use and no canary (its free chunks then read as zero); returns the bytes.
std::size_t zone_discard_free_pages(Zone& z);
// Returns an empty zone's pages past its first kPooledZoneKeepBytes to the OS; returns the
// bytes.
std::size_t zone_trim(Zone& z);
// Rebuilds the derived state (cache, used, summary, lists) from the bitmap alone, for a zone
// whose owner thread vanished mid-operation (the child of fork).
void zone_rebuild(Zone& z);
// Aborts on a broken invariant or canary; returns the number of chunks in use.
std::uint32_t zone_verify(const Zone& z);
ISO_COLD [[noreturn]] void zone_bad_free(const Zone& z, const void* p, std::uint64_t state);
// Checks both ends of canary chunk idx.
void zone_check_canary(const Zone& z, std::uint32_t idx);
ISO_COLD [[noreturn]] void zone_canary_fault(const Zone& z, std::uint32_t idx);

// Address of chunk idx.
ISO_ALWAYS_INLINE std::uintptr_t zone_chunk_addr(const Zone& z, std::uint32_t idx) {
  return z.user_base + std::uintptr_t{idx} * z.chunk_bytes();
}

// The canary word of chunk idx that an overflow out of a neighbour would hit first: its
// head when the neighbour is below, its tail when above. One load and an xor.
ISO_ALWAYS_INLINE void zone_check_canary_word(const Zone& z, std::uint32_t idx, bool head) {
  if (idx >= z.committed_chunks) return;  // not committed: nothing to check
  std::uintptr_t c = zone_chunk_addr(z, idx);
  std::uintptr_t at = head ? c : c + z.chunk_bytes() - sizeof(std::uint64_t);
  std::uint64_t v;
  std::memcpy(&v, reinterpret_cast<const void*>(at), sizeof v);
  if (ISO_UNLIKELY(v != (z.canary_secret ^ c))) zone_canary_fault(z, idx);
}

// --- hot paths ---------------------------------------------------------------------------

// Pops a chunk from a non-empty cache. Zero: clear it unless it is fresh from the OS.
template <bool Zero>
ISO_ALWAYS_INLINE void* zone_pop(Zone& z) {
  std::uint32_t idx = z.cache.pop();
  std::uint64_t prev = set_chunk_state(z.bitmap, idx, kChunkInUse);
  ++z.used;
  void* p = reinterpret_cast<void*>(zone_chunk_addr(z, idx));
  if constexpr (Zero) {
    if (prev != kChunkFresh) std::memset(p, 0, z.chunk_bytes());
  }
  return p;
}

// The chunk index of p if p is the start of a chunk slot of this zone; false otherwise.
ISO_ALWAYS_INLINE bool zone_chunk_at(const Zone& z, const void* p, std::uint32_t& idx) {
  std::uint64_t off = reinterpret_cast<std::uintptr_t>(p) - z.user_base;
  return chunk_start(off, z.odd_inverse, z.odd_shift, z.chunk_count_, idx);
}

// Where a freed chunk waits to be handed out again.
enum class FreedTo {
  // The cache when there is room, else the summary: a thread's own frees. The next
  // allocation of the class reuses the chunk while its lines are in this core's cache.
  kCache,
  // The same without a branch: the drain of a batch. Its chunks come from many zones in
  // random order, and whether the zone's cache is full mispredicted on a third of them
  // (cachegrind's branch model). Batches from another CPU went to the summary for a while,
  // so that a chunk was not handed out again moments after the freeing core read it: that
  // won with the CPUs far apart and lost with them near (see docs/DESIGN.md, known limits).
  kCacheOrSummary,
};

// Frees chunk idx of this zone (the caller's thread owns it). Aborts unless it is in use.
template <FreedTo To = FreedTo::kCache>
ISO_ALWAYS_INLINE void zone_free_at(Zone& z, std::uint32_t idx) {
  // One load and one store of the bitmap word; the neighbours' states come from the same
  // register (back-to-back frees in one word then do not wait on their own stores).
  std::uint64_t* wp = &z.bitmap[idx >> 5];
  std::uint64_t w = *wp;
  unsigned sh = bitmap_shift(idx);
  if (ISO_UNLIKELY(((w >> sh) & 3u) != kChunkInUse))
    zone_bad_free(z, reinterpret_cast<void*>(zone_chunk_addr(z, idx)), (w >> sh) & 3u);
  w ^= std::uint64_t{3} << sh;  // in use (01) -> freed (10)
  *wp = w;
  --z.used;
#if ISOSHARD_CANARIES
  // An overflow out of this chunk (or into it) shows in a canary neighbour.
  // Bit 2k + 2 of canaries: chunk k of the word is a canary (odd bits mix two chunks' states
  // and are never tested). Shifted down by this chunk's shift, its neighbours' pairs sit at
  // bits 0 and 4: one test for both (one free in about 32 has a canary next to it). The
  // first and last chunks of a word are never canaries (see zone.cpp's canary_index), so
  // what the shifts drop or bring in at either end is never needed.
  std::uint64_t canaries = (w & (w >> 1)) << 2;
  std::uint64_t around = canaries >> sh;
  if (ISO_UNLIKELY((around & 0x11) != 0)) {
    if ((around & 0x10) != 0) zone_check_canary_word(z, idx + 1, true);
    if ((around & 0x01) != 0) zone_check_canary_word(z, idx - 1, false);
  }
#endif
#if ISOSHARD_SANITIZE_CHUNKS
  std::memset(reinterpret_cast<void*>(zone_chunk_addr(z, idx)), 0xde, z.chunk_bytes());
#endif
  std::uint32_t word = idx >> 5;
  if constexpr (To == FreedTo::kCacheOrSummary) {
    std::uint64_t missed = 1 - z.cache.push_if_room(idx);
    z.summary[word >> 6] |= missed << (word & 63);
  } else if (To == FreedTo::kCache && ISO_LIKELY(!z.cache.full())) {
    z.cache.push(idx);
  } else {
    z.summary[word >> 6] |= std::uint64_t{1} << (word & 63);
  }
}

// Frees a chunk of this zone (the caller's thread owns it). Aborts on a pointer that is not
// the start of a chunk in use.
template <FreedTo To = FreedTo::kCache>
ISO_ALWAYS_INLINE void zone_free(Zone& z, void* p) {
  std::uint32_t idx;
  if (ISO_UNLIKELY(!zone_chunk_at(z, p, idx))) zone_bad_free(z, p, kChunkFresh);
  zone_free_at<To>(z, idx);
}

}  // namespace iso
