// The root: pointer → zone lookup by arithmetic, big allocations and their cache.
#include "runtime/root_arena.hpp"

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "api/isoshard.h"
#include "runtime/metadata_arena.hpp"
#include "runtime/shard/remote_batch.hpp"
#include "runtime/shard/shard.hpp"

namespace iso {
namespace {

TEST(Root, LookupMapsEveryChunkToItsZoneAndRejectsForeignPointers) {
  ASSERT_TRUE(root_init());
  std::vector<void*> ptrs;
  for (std::size_t n = 1; n <= kMaxSmallBytes; n = n * 3 / 2 + 1) ptrs.push_back(iso_alloc(n));
  for (void* p : ptrs) {
    Zone* z = zone_of(p);
    ASSERT_NE(z, nullptr);
    EXPECT_EQ(z->kind, SlotKind::kZone);
    EXPECT_GE(reinterpret_cast<std::uintptr_t>(p), z->user_base);
    EXPECT_LT(reinterpret_cast<std::uintptr_t>(p), z->user_base + kZoneUserBytes);
  }
  int on_stack = 0;
  static int global = 0;
  EXPECT_EQ(zone_of(&on_stack), nullptr);
  EXPECT_EQ(zone_of(&global), nullptr);
  EXPECT_EQ(zone_of(nullptr), nullptr);
  for (void* p : ptrs) iso_free(p);
}

TEST(Root, BigAllocationsAreWritableGuardedAndReusedFromTheCache) {
  std::size_t n = 3 * kZoneSlotBytes + 12345;  // spans several slots
  auto* p = static_cast<char*>(iso_alloc(n));
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, n);
  EXPECT_GE(iso_chunksz(p), n);
  EXPECT_EQ(zone_of(p)->kind, SlotKind::kBig);
  EXPECT_EQ(zone_of(p + kZoneSlotBytes)->kind, SlotKind::kBigTail);
  iso_free(p);

  void* a = iso_alloc(kMaxSmallBytes + 100000);
  iso_free(a);
  const std::size_t cached = root_stats().big_cached_bytes;
  ASSERT_GT(cached, 0u);
  // Within half of a's size: served from the cache (by a, or by a mapping an earlier test
  // left there when the tests run repeatedly in one process).
  void* b = iso_alloc(kMaxSmallBytes + 90000);
  EXPECT_LT(root_stats().big_cached_bytes, cached) << "a new mapping where the cache had one";
  iso_free(b);
}

TEST(Root, BigCallocIsZeroEvenWhenReused) {
  constexpr std::size_t n = kMaxSmallBytes + 200000;
  auto* a = static_cast<unsigned char*>(iso_alloc(n));
  std::memset(a, 0xee, n);
  iso_free(a);
  auto* b = static_cast<unsigned char*>(iso_calloc(1, n));
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(b[i], 0) << i;
  iso_free(b);
}

TEST(Root, AlignedBigAllocationsHonourLargeAlignments) {
  for (std::size_t align : {std::size_t{8192}, std::size_t{1} << 20, kZoneSlotBytes, kZoneSlotBytes * 4}) {
    void* p = iso_aligned_alloc(align, 50000);
    ASSERT_NE(p, nullptr) << align;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u) << align;
    std::memset(p, 3, 50000);
    iso_free(p);
  }
}

struct Mapping {
  std::uintptr_t start = 0, end = 0;
  bool readable = false, writable = false;
};

std::vector<Mapping> mappings() {
  std::vector<Mapping> all;
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  EXPECT_NE(f, nullptr);
  if (!f) return all;
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long lo = 0, hi = 0;
    char perms[5] = "";
    if (std::sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3)
      all.push_back(Mapping{lo, hi, perms[0] == 'r', perms[1] == 'w'});
  }
  std::fclose(f);
  return all;
}

// The writable range around address a (adjacent writable mappings joined: mlock splits
// them), and the mapping that follows it.
struct WritableRun {
  std::uintptr_t start = 0, end = 0;
  Mapping next;
};
WritableRun writable_run(std::uintptr_t a) {
  std::vector<Mapping> all = mappings();
  WritableRun run;
  std::size_t i = 0;
  while (i < all.size() && !(all[i].start <= a && a < all[i].end)) ++i;
  if (i == all.size() || !all[i].writable) return run;
  std::size_t lo = i, hi = i;
  while (lo > 0 && all[lo - 1].writable && all[lo - 1].end == all[lo].start) --lo;
  while (hi + 1 < all.size() && all[hi + 1].writable && all[hi + 1].start == all[hi].end) ++hi;
  run.start = all[lo].start;
  run.end = all[hi].end;
  if (hi + 1 < all.size() && all[hi + 1].start == run.end) run.next = all[hi + 1];
  return run;
}

TEST(Root, MetadataIsWritableOnlyAsFarAsItIsUsed) {
  // Under vm.overcommit_memory=2 a private writable mapping is charged in full, whatever
  // MAP_NORESERVE says: reserved read-write, the 64 GiB bitmap arena failed every process's
  // first malloc there. Each arena is writable up to what it handed out, read-only beyond.
  void* chunks[200];
  for (void*& c : chunks) c = iso_alloc(48);  // past the light allocations: a shard
  ASSERT_FALSE(is_sentinel(t_shard));
  const Zone* z = zone_of(chunks[199]);
  RemoteBatch* b = batch_get();
  ASSERT_NE(b, nullptr);
  struct {
    const char* what;
    const void* p;
  } used[] = {{"zone table", z}, {"bitmaps", z->bitmap}, {"batches", b}, {"shards", t_shard}};
  for (const auto& u : used) {
    WritableRun run = writable_run(reinterpret_cast<std::uintptr_t>(u.p));
    ASSERT_NE(run.end, 0u) << u.what << " is not writable";
    EXPECT_LE(run.end - run.start, std::size_t{64} << 20) << u.what;
    EXPECT_EQ(run.next.start, run.end) << u.what << ": its reservation goes on";
    EXPECT_TRUE(run.next.readable && !run.next.writable) << u.what << ": read-only beyond";
  }
  batch_put(b);
  for (void* c : chunks) iso_free(c);
}

// The fallback a capped address space (RLIMIT_AS, valgrind) needs: the arena halves until its
// reservation fits. In a child, which may lower its own limit.
TEST(RootDeath, AMetadataArenaHalvesUntilItFitsTheAddressSpaceLimit) {
  auto child = [] {
    long pages = 0;
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f || std::fscanf(f, "%ld", &pages) != 1) std::_Exit(2);
    std::fclose(f);
    constexpr std::size_t kRoomBytes = std::size_t{256} << 20;
    rlimit cap{};
    cap.rlim_cur = cap.rlim_max = static_cast<rlim_t>(pages) * kPageBytes + kRoomBytes;
    if (setrlimit(RLIMIT_AS, &cap) != 0) std::_Exit(3);
    MetadataArena arena;
    if (!arena.init_up_to(std::size_t{64} << 30, std::size_t{1} << 20)) std::_Exit(4);
    if (arena.size() > kRoomBytes || arena.size() < kRoomBytes / 8) std::_Exit(5);
    auto* p = static_cast<char*>(arena.alloc(kPageBytes));
    if (!p) std::_Exit(6);
    p[kPageBytes - 1] = 1;
    std::_Exit(0);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

TEST(RootDeath, AStrayPointerIntoAnUntakenSlotIsAnInvalidFree) {
  // The zone table past the slots taken is read-only and reads as zeros: an unused slot.
  ASSERT_TRUE(root_init());
  void* stray = reinterpret_cast<void*>(slot_base(root_slot_count() - 1) + kPageBytes);
  EXPECT_DEATH(iso_free(stray), "isoshard: invalid free");
}

TEST(RootDeath, BigDoubleFreeAndInteriorFreeAbort) {
  char* p = static_cast<char*>(iso_alloc(1 << 20));
  EXPECT_DEATH(iso_free(p + 4096), "isoshard: invalid free");
  iso_free(p);
  EXPECT_DEATH(iso_free(p), "isoshard: (double|invalid) free");
}

}  // namespace
}  // namespace iso
