// Zones driven directly (no shard): refill, pop, free, canaries, growth, release, donation.
#include "runtime/zone/zone.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "runtime/platform.hpp"
#include "runtime/root_arena.hpp"
#include "runtime/shard/shard.hpp"
#include "tests/unit/resident_pages.hpp"

namespace iso {
namespace {

// Zones made here belong to a shard no thread is bound to (every zone's owner is a shard:
// the fork handler walks them).
Shard g_unbound_owner;

Zone* make_zone(unsigned cls) {
  EXPECT_TRUE(root_init());
  Zone* z = root_new_zone(cls, &g_unbound_owner);
  EXPECT_NE(z, nullptr);
  return z;
}

// A page supply that takes from one donor zone.
PageSupply pages_from(Zone* donor) {
  return PageSupply{[](void* ctx, std::uintptr_t dst, std::size_t bytes) {
                      return zone_donate_tail(*static_cast<Zone*>(ctx), dst, bytes);
                    },
                    donor};
}

void* take(Zone& z) {
  if (z.cache.empty() && !zone_refill(z)) return nullptr;
  return zone_pop<false>(z);
}

TEST(Zone, HandsOutDistinctAlignedChunksUntilFullThenRefuses) {
  unsigned cls = size_class_of(32768);
  Zone* z = make_zone(cls);
  std::set<void*> seen;
  while (void* p = take(*z)) {
    ASSERT_TRUE(seen.insert(p).second);
    ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % kMinAlignBytes, 0u);
    std::memset(p, 0x5a, z->chunk_bytes());  // the whole chunk is writable
  }
  // Every chunk but the canaries was handed out.
  EXPECT_GT(seen.size(), z->chunk_count() - z->chunk_count() / kCanaryGroupChunks - 2);
  EXPECT_LE(seen.size(), z->chunk_count());
  EXPECT_EQ(zone_verify(*z), seen.size());
  for (void* p : seen) zone_free(*z, p);
  EXPECT_EQ(zone_verify(*z), 0u);
}

TEST(Zone, EachGroupHasOneCanaryNeverFirstOrLastInItsBitmapWord) {
  // Free checks only the canary neighbours its own bitmap word holds: a canary at a word's
  // edge would have a neighbour in the next word that no free checks.
  Zone* z = make_zone(size_class_of(64));
  std::vector<void*> ps;
  while (void* p = take(*z)) ps.push_back(p);
  ASSERT_EQ(z->committed_chunks, z->chunk_count());
  std::vector<unsigned> per_group(z->chunk_count() / kCanaryGroupChunks + 1);
  std::set<unsigned> offsets;
  for (std::uint32_t i = 0; i < z->chunk_count(); ++i) {
    if (chunk_state(z->bitmap, i) != kChunkCanary) continue;
    EXPECT_NE(i % kChunksPerWord, 0u) << "canary " << i << " first in its word";
    EXPECT_NE(i % kChunksPerWord, kChunksPerWord - 1) << "canary " << i << " last in its word";
    ++per_group[i / kCanaryGroupChunks];
    offsets.insert(i % kCanaryGroupChunks);
  }
  for (std::size_t g = 0; g < z->chunk_count() / kCanaryGroupChunks; ++g)
    EXPECT_EQ(per_group[g], 1u) << "group " << g;
  EXPECT_GT(offsets.size(), 40u) << "canary offsets barely vary";  // 60 possible
  for (void* p : ps) zone_free(*z, p);
}

TEST(Zone, FreedChunkIsReusedFirst) {
  Zone* z = make_zone(size_class_of(64));
  void* a = take(*z);
  void* b = take(*z);
  zone_free(*z, a);
  EXPECT_EQ(take(*z), a);
  zone_free(*z, a);
  zone_free(*z, b);
}

TEST(Zone, CallocClearsReusedChunksOnly) {
  Zone* z = make_zone(size_class_of(256));
  ASSERT_TRUE(zone_refill(*z));
  auto* p = static_cast<unsigned char*>(zone_pop<true>(*z));
  for (int i = 0; i < 256; ++i) ASSERT_EQ(p[i], 0);
  std::memset(p, 0xff, 256);
  zone_free(*z, p);
  auto* q = static_cast<unsigned char*>(zone_pop<true>(*z));
  ASSERT_EQ(q, p);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(q[i], 0) << i;
  zone_free(*z, q);
}

TEST(Zone, ManyFreesBeyondTheCacheAreFoundAgainByTheScan) {
  Zone* z = make_zone(size_class_of(48));
  std::vector<void*> ptrs;
  for (int i = 0; i < 5000; ++i) ptrs.push_back(take(*z));
  for (void* p : ptrs) zone_free(*z, p);
  EXPECT_EQ(zone_verify(*z), 0u);
  std::set<void*> again;
  for (int i = 0; i < 5000; ++i) again.insert(take(*z));
  EXPECT_EQ(again.size(), 5000u);
  EXPECT_EQ(zone_verify(*z), 5000u);
  for (void* p : again) zone_free(*z, p);
}

TEST(Zone, ReleaseReturnsPagesAndTheZoneGrowsAgain) {
  Zone* z = make_zone(size_class_of(4096));
  std::vector<void*> ptrs;
  for (int i = 0; i < 100; ++i) ptrs.push_back(take(*z));
  for (void* p : ptrs) zone_free(*z, p);
  zone_release(*z);
  EXPECT_EQ(z->committed_bytes, 0u);
  void* p = take(*z);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(static_cast<unsigned char*>(p)[100], 0);  // fresh pages read as zero
  zone_free(*z, p);
  EXPECT_EQ(zone_verify(*z), 0u);
}

TEST(Zone, EmptyZoneDonatesItsPagesToAnotherClass) {
  Zone* donor = make_zone(size_class_of(1024));
  std::vector<void*> ptrs;
  for (int i = 0; i < 200; ++i) ptrs.push_back(take(*donor));
  for (void* p : ptrs) std::memset(p, 0x77, 1024);
  for (void* p : ptrs) zone_free(*donor, p);
  std::size_t had = donor->committed_bytes;

  Zone* taker = make_zone(size_class_of(512));
  PageSupply supply = pages_from(donor);
  ASSERT_TRUE(zone_refill(*taker, &supply));
  EXPECT_LT(donor->committed_bytes, had);
  EXPECT_EQ(zone_verify(*donor), 0u);
  // Donated pages carry old data: calloc must still see zeros.
  auto* q = static_cast<unsigned char*>(zone_pop<true>(*taker));
  for (int i = 0; i < 512; ++i) ASSERT_EQ(q[i], 0);
  zone_free(*taker, q);
  EXPECT_EQ(zone_verify(*taker), 0u);
}

TEST(Zone, OnKernelsThatMoveOneMappingAtATimeDonationsStayInsideTheLastPiece) {
  zone_set_moves_span_mappings(false);
  Zone* donor = make_zone(size_class_of(2048));
  std::vector<void*> ptrs;
  for (int i = 0; i < 200; ++i) ptrs.push_back(take(*donor));  // several commit steps
  for (void* p : ptrs) zone_free(*donor, p);
  ASSERT_GE(donor->piece_count, 2);
  std::size_t last = donor->committed_bytes - donor->piece_start[donor->piece_count - 1];
  EXPECT_EQ(zone_donatable_bytes(*donor), last);

  Zone* taker = make_zone(size_class_of(1024));
  PageSupply supply = pages_from(donor);
  std::size_t before = donor->committed_bytes;
  ASSERT_TRUE(zone_refill(*taker, &supply));
  EXPECT_LE(before - donor->committed_bytes, last);  // never across a piece boundary
  EXPECT_EQ(zone_verify(*donor), 0u);
  void* q = zone_pop<true>(*taker);
  std::memset(q, 1, 1024);  // donated pages are mapped and writable
  zone_free(*taker, q);
  EXPECT_EQ(zone_verify(*taker), 0u);
  zone_set_moves_span_mappings(os::moves_span_mappings());
}

TEST(Zone, TrimKeepsTheFirst64KiBOfAnEmptyZone) {
  Zone* z = make_zone(size_class_of(4096));
  std::vector<void*> ptrs;
  for (int i = 0; i < 100; ++i) ptrs.push_back(take(*z));
  for (void* p : ptrs) zone_free(*z, p);
  EXPECT_GT(zone_trim(*z), 0u);
  EXPECT_EQ(z->committed_bytes, kPooledZoneKeepBytes);
  EXPECT_EQ(zone_verify(*z), 0u);
  void* p = take(*z);
  ASSERT_NE(p, nullptr);
  zone_free(*z, p);
}

TEST(Zone, AZoneStartsWithOnePageAndHandsOutItsLowestChunksFirst) {
  Zone* z = make_zone(size_class_of(64));
  std::vector<std::uintptr_t> got;
  for (int i = 0; i < 40; ++i) got.push_back(reinterpret_cast<std::uintptr_t>(take(*z)));
  EXPECT_EQ(z->committed_bytes, kCommitFirstStepBytes);
  // Ascending from the zone's start (a canary may take one slot): pages fault in one by one.
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
  EXPECT_LT(got.back() - z->user_base, 42u * 64);
  for (std::uintptr_t p : got) zone_free(*z, reinterpret_cast<void*>(p));
}

TEST(Zone, AFastGrowingZoneCommitsWholeStepsUntilItsPagesGoBack) {
  Zone* z = make_zone(size_class_of(256));
  z->grow_fast = true;  // what the shard sets when the class filled its previous zone
  void* p = take(*z);
  std::size_t whole = std::size_t{z->chunk_count()} * z->chunk_bytes();
  EXPECT_EQ(z->committed_bytes, std::min(whole, kCommitMaxStepBytes));
  zone_free(*z, p);
  zone_release(*z);
  p = take(*z);  // an idle class starts small again
  EXPECT_EQ(z->committed_bytes, kCommitFirstStepBytes);
  zone_free(*z, p);
  EXPECT_EQ(zone_verify(*z), 0u);
}

// The /proc/self/pagemap entry of the page holding p: bit 63 present, bit 56 mapped by this
// process alone (the shared zero page never is).
std::uint64_t pagemap_entry(const void* p) {
  std::uint64_t e = 0;
  int fd = open("/proc/self/pagemap", O_RDONLY);
  EXPECT_GE(fd, 0);
  if (fd < 0) return 0;
  off_t at = static_cast<off_t>(reinterpret_cast<std::uintptr_t>(p) / kPageBytes * sizeof e);
  EXPECT_EQ(pread(fd, &e, sizeof e, at), static_cast<ssize_t>(sizeof e));
  close(fd);
  return e;
}

TEST(Zone, GrowingWritesItsNewBitmapWordsBeforeTheRefillReadsThem) {
  // A fresh bitmap page read before it is written maps the shared zero page; the first
  // write then faults again and flushes the TLB of every CPU the process runs on (an IPI
  // each). A 4 KiB-chunk zone's first step holds one chunk, never a canary: only the new
  // words' zeros write its bitmap before the refill's scan reads it.
  Zone* z = make_zone(size_class_of(4096));
  std::uint64_t* arena_bitmap = z->bitmap;  // untouched: given back at the end
  const std::size_t bitmap_bytes = (zone_bitmap_bytes(z->cls) + kPageBytes - 1) & ~(kPageBytes - 1);
  void* bitmap = mmap(nullptr, bitmap_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(bitmap, MAP_FAILED);
  zone_init(*z, z->id, slot_base(z->id), z->cls, static_cast<std::uint64_t*>(bitmap), &g_unbound_owner);
  ASSERT_TRUE(zone_refill(*z));  // grows one step and scans it; nothing popped yet
  EXPECT_EQ(z->committed_chunks, 1u);
  std::uint64_t e = pagemap_entry(bitmap);
  EXPECT_EQ(e >> 63, 1u) << "the bitmap page is not there at all";
  EXPECT_EQ((e >> 56) & 1, 1u) << "the bitmap page is the shared zero page";
  void* p = zone_pop<false>(*z);
  zone_free(*z, p);
  EXPECT_EQ(zone_verify(*z), 0u);
  zone_release(*z);
  z->bitmap = arena_bitmap;
  munmap(bitmap, bitmap_bytes);
}

TEST(Zone, DiscardReturnsFreePagesAndKeepsChunksInUseAndCanaries) {
  Zone* z = make_zone(size_class_of(4096));
  std::vector<unsigned char*> ptrs;
  for (int i = 0; i < 200; ++i) {
    ptrs.push_back(static_cast<unsigned char*>(take(*z)));
    std::memset(ptrs.back(), 0x77, 4096);
  }
  std::size_t committed = z->committed_bytes;
  ASSERT_GT(committed, kPooledZoneKeepBytes);
  std::size_t before = resident_pages(z->user_base, committed);
  // Keep every 50th chunk in use; free the rest.
  std::vector<unsigned char*> kept;
  for (std::size_t i = 0; i < ptrs.size(); ++i) {
    if (i % 50 == 0) kept.push_back(ptrs[i]);
    else zone_free(*z, ptrs[i]);
  }
  EXPECT_GT(zone_discard_free_pages(*z), 0u);
  // Left resident: the first 64 KiB, the pages of chunks in use, those of canaries.
  std::size_t canaries = z->committed_chunks / kCanaryGroupChunks + 1;
  EXPECT_GE(before, ptrs.size());
  EXPECT_LE(resident_pages(z->user_base, committed),
            kPooledZoneKeepBytes / kPageBytes + kept.size() + canaries);
  for (unsigned char* p : kept) EXPECT_EQ(p[4095], 0x77);  // chunks in use keep their data
  EXPECT_EQ(zone_verify(*z), kept.size());                  // and every canary is intact
  for (std::size_t i = 0; i < ptrs.size(); ++i) {
    if (i % 50 == 0 || reinterpret_cast<std::uintptr_t>(ptrs[i]) - z->user_base < kPooledZoneKeepBytes)
      continue;
    ASSERT_EQ(ptrs[i][0], 0) << "freed chunk " << i << " was not discarded";
  }
  // Its chunks are fresh again: calloc hands them out without clearing, and they are zero.
  std::vector<unsigned char*> again;
  while (auto* q = static_cast<unsigned char*>(z->cache.empty() && !zone_refill(*z) ? nullptr : zone_pop<true>(*z))) {
    again.push_back(q);
    ASSERT_EQ(q[0] | q[4095], 0) << "chunk " << again.size() << " handed out by calloc not zero";
  }
  for (unsigned char* q : again) zone_free(*z, q);
  for (unsigned char* p : kept) zone_free(*z, p);
  EXPECT_EQ(zone_verify(*z), 0u);
}

TEST(ZoneDeath, DoubleFreeNamesTheFaultPointerAndZone) {
  Zone* z = make_zone(size_class_of(128));
  void* p = take(*z);
  zone_free(*z, p);
  EXPECT_DEATH(zone_free(*z, p), "isoshard: double free of 0x[0-9a-f]+ in zone [0-9]+ \\(128-byte chunks\\)");
}

TEST(ZoneDeath, FreeInsideAChunkIsInvalid) {
  Zone* z = make_zone(size_class_of(128));
  char* p = static_cast<char*>(take(*z));
  EXPECT_DEATH(zone_free(*z, p + 16), "isoshard: invalid free of 0x[0-9a-f]+ in zone");
}

TEST(ZoneDeath, OverflowIntoACanaryIsCaughtWhenTheNeighbourIsFreed) {
  Zone* z = make_zone(size_class_of(64));
  std::vector<char*> ptrs;
  for (int i = 0; i < 2000; ++i) ptrs.push_back(static_cast<char*>(take(*z)));
  // The highest chunk may end at the last committed page: its overflow would fault instead.
  std::sort(ptrs.begin(), ptrs.end());
  ptrs.pop_back();
  EXPECT_DEATH(
      {
        for (char* p : ptrs) std::memset(p, 'A', 64 + 8);  // 8 bytes past each chunk
        for (char* p : ptrs) zone_free(*z, p);
      },
      "isoshard: canary overwritten");
}

// Free checks its two neighbours' canaries from the bitmap word it already holds: each
// neighbour, at the edges of a word too, must check the canary next to it and nothing further.
TEST(ZoneDeath, FreeingEitherNeighbourOfACanaryChecksItAndNoOtherChunkDoes) {
  Zone* z = make_zone(size_class_of(64));
  while (take(*z) != nullptr) {
  }
  ASSERT_EQ(z->committed_chunks, z->chunk_count());
  auto canary_at = [z](std::uint32_t pos) {  // the first canary at this position in its word
    for (std::uint32_t i = kChunksPerWord; i + 2 < z->chunk_count(); ++i)
      if (i % kChunksPerWord == pos && chunk_state(z->bitmap, i) == kChunkCanary) return i;
    return std::uint32_t{0};
  };
  auto head = [z](std::uint32_t i) { return reinterpret_cast<char*>(zone_chunk_addr(*z, i)); };
  for (std::uint32_t pos : {1u, 15u, kChunksPerWord - 2}) {
    std::uint32_t c = canary_at(pos);
    ASSERT_NE(c, 0u) << "no canary at position " << pos;
    char* below = head(c - 1);
    char* above = head(c + 1);
    // An overflow out of the chunk below hits the canary's head; an underflow out of the chunk
    // above hits its tail.
    EXPECT_DEATH(
        {
          head(c)[0] ^= 1;
          zone_free(*z, below);
        },
        "isoshard: canary overwritten")
        << "canary " << c << ", its neighbour below freed";
    EXPECT_DEATH(
        {
          head(c + 1)[-1] ^= 1;
          zone_free(*z, above);
        },
        "isoshard: canary overwritten")
        << "canary " << c << ", its neighbour above freed";
    EXPECT_EXIT(
        {
          head(c)[0] ^= 1;
          head(c + 1)[-1] ^= 1;
          zone_free(*z, head(c - 2));
          zone_free(*z, head(c + 2));
          std::_Exit(0);
        },
        ::testing::ExitedWithCode(0), "")
        << "canary " << c << ": a chunk two away checked it";
  }
}

}  // namespace
}  // namespace iso
