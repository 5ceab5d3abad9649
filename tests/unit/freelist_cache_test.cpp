#include "runtime/zone/freelist_cache.hpp"

#include <gtest/gtest.h>

namespace iso {
namespace {

TEST(FreelistCache, PopsInReverseOrderOfPushAndReportsEmptyAndFull) {
  FreelistCache c{};
  EXPECT_TRUE(c.empty());
  for (std::uint32_t i = 0; i < kFreelistCacheSlots; ++i) {
    EXPECT_FALSE(c.full());
    c.push(i * 3);
  }
  EXPECT_TRUE(c.full());
  // Last freed, first reused: a chunk freed and allocated again stays hot in cache.
  for (std::uint32_t i = kFreelistCacheSlots; i-- > 0;) EXPECT_EQ(c.pop(), i * 3);
  EXPECT_TRUE(c.empty());
}

}  // namespace
}  // namespace iso
