// Mappings as the kernel sees them: the seed's advice on user pages and bitmaps, given once
// and kept by every commit and decommit, and prefaulting.
#include "runtime/platform.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "runtime/root_arena.hpp"
#include "runtime/shard/shard.hpp"
#include "runtime/zone/zone.hpp"
#include "tests/unit/resident_pages.hpp"

namespace iso {
namespace {

Shard g_unbound_owner;

// The VmFlags line of the mapping that holds address a (/proc/self/smaps), "" if none.
std::string vm_flags_at(std::uintptr_t a) {
  std::FILE* f = std::fopen("/proc/self/smaps", "r");
  EXPECT_NE(f, nullptr);
  if (!f) return "";
  char line[512];
  bool inside = false;
  std::string flags;
  while (std::fgets(line, sizeof line, f)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && std::strchr(line, '-') < std::strchr(line, ' ')) {
      inside = lo <= a && a < hi;
    } else if (inside && std::strncmp(line, "VmFlags:", 8) == 0) {
      flags = line + 8;
      break;
    }
  }
  std::fclose(f);
  return flags;
}

bool has_flag(const std::string& flags, const char* two_letters) {
  return (flags + " ").find(std::string(" ") + two_letters + " ") != std::string::npos;
}

Zone* make_zone(unsigned cls) {
  EXPECT_TRUE(root_init());
  Zone* z = root_new_zone(cls, &g_unbound_owner);
  EXPECT_NE(z, nullptr);
  return z;
}

TEST(Platform, UserPagesCarryRandomAndBitmapsSequentialAdviceThroughCommitAndRelease) {
  Zone* z = make_zone(size_class_of(256));
  ASSERT_TRUE(zone_refill(*z));
  EXPECT_TRUE(has_flag(vm_flags_at(z->user_base), "rr")) << vm_flags_at(z->user_base);
  EXPECT_TRUE(has_flag(vm_flags_at(z->user_base), "wr"));  // committed: writable
  auto bitmap = reinterpret_cast<std::uintptr_t>(z->bitmap);
  EXPECT_TRUE(has_flag(vm_flags_at(bitmap), "sr")) << vm_flags_at(bitmap);
  zone_release(*z);
  std::string after = vm_flags_at(z->user_base);
  EXPECT_TRUE(has_flag(after, "rr")) << after;  // the advice outlives the pages
  EXPECT_FALSE(has_flag(after, "wr")) << after;  // and the range is inaccessible again
  EXPECT_EQ(resident_pages(z->user_base, kCommitFirstStepBytes), 0u);
  ASSERT_TRUE(zone_refill(*z));  // committed again, with the advice
  EXPECT_TRUE(has_flag(vm_flags_at(z->user_base), "wr"));
  EXPECT_TRUE(has_flag(vm_flags_at(z->user_base), "rr"));
}

#if ISOSHARD_PRE_POPULATE_PAGES
TEST(Platform, AStepPastThePrefaultSizeIsResidentBeforeAnyTouch) {
  Zone* z = make_zone(size_class_of(4096));
  z->grow_fast = true;  // the step is kCommitMaxStepBytes, prefaulted
  ASSERT_TRUE(zone_refill(*z));
  ASSERT_EQ(z->committed_bytes, kCommitMaxStepBytes - 2 * kPageBytes);
  EXPECT_EQ(resident_pages(z->user_base, z->committed_bytes), z->committed_bytes / kPageBytes);
  zone_release(*z);
}

// The common shard's zones hold short threads' chunks: their pages fault in as touched.
TEST(Platform, ACommonShardZonesStepIsNotPrefaulted) {
  Zone* z = make_zone(size_class_of(4096));
  z->common = true;
  z->grow_fast = true;  // what would prefault another zone's step
  ASSERT_TRUE(zone_refill(*z));
  ASSERT_EQ(z->committed_bytes, kCommitMaxStepBytes - 2 * kPageBytes);
  // Touched so far: the canary chunks, one in 64 (a page each at this size).
  EXPECT_LE(resident_pages(z->user_base, z->committed_bytes), z->committed_bytes / kPageBytes / 32);
  zone_release(*z);
}
#endif

}  // namespace
}  // namespace iso
