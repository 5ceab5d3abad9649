// The root: pointer → zone lookup by arithmetic, big allocations and their cache.
#include "runtime/root_arena.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "api/isoshard.h"

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

TEST(RootDeath, BigDoubleFreeAndInteriorFreeAbort) {
  char* p = static_cast<char*>(iso_alloc(1 << 20));
  EXPECT_DEATH(iso_free(p + 4096), "isoshard: invalid free");
  iso_free(p);
  EXPECT_DEATH(iso_free(p), "isoshard: (double|invalid) free");
}

}  // namespace
}  // namespace iso
