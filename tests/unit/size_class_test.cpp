#include "runtime/zone/size_class.hpp"

#include <gtest/gtest.h>

namespace iso {
namespace {

TEST(SizeClass, EveryRequestFitsItsClassAndNoSmallerClassFits) {
  for (std::size_t n = 1; n <= kMaxSmallBytes; ++n) {
    unsigned c = size_class_of(n);
    ASSERT_LT(c, kClassCount) << n;
    ASSERT_GE(class_bytes_of(c), n) << n;
    if (c > 0) ASSERT_LT(class_bytes_of(c - 1), n) << n;
  }
  EXPECT_EQ(size_class_of(0), 0u);
}

TEST(SizeClass, ClassesAre16ByteMultiplesAndWasteUnderAQuarter) {
  for (unsigned c = 0; c < kClassCount; ++c) {
    EXPECT_EQ(class_bytes_of(c) % kMinAlignBytes, 0u) << c;
    if (c > 8) {
      double waste = double(class_bytes_of(c) - class_bytes_of(c - 1) - 1) / class_bytes_of(c);
      EXPECT_LT(waste, 0.25) << c;
    }
  }
}

TEST(SizeClass, EveryPowerOfTwoIsAClass) {
  // Aligned allocations up to a page pick the power-of-two class.
  for (std::size_t p = 16; p <= kMaxSmallBytes; p *= 2) EXPECT_EQ(class_bytes_of(size_class_of(p)), p);
}

bool start_of(std::uint64_t off, unsigned c, std::uint32_t& idx) {
  const SizeClassInfo& k = kClasses[c];
  return chunk_start(off, k.odd_inverse, k.odd_shift, k.chunk_count, idx);
}

TEST(SizeClass, ChunkStartFindsEveryChunkOfEveryClassAndNothingAroundIt) {
  for (unsigned c = 0; c < kClassCount; ++c) {
    const std::uint64_t b = kClasses[c].chunk_bytes, n = kClasses[c].chunk_count;
    std::uint32_t idx = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(start_of(i * b, c, idx)) << c << " " << i;
      ASSERT_EQ(idx, i) << c;
      ASSERT_FALSE(start_of(i * b + 8, c, idx)) << c << " " << i;  // inside it
      if (b > 16) ASSERT_FALSE(start_of(i * b + 16, c, idx)) << c << " " << i;
      ASSERT_FALSE(start_of(i * b + b - 1, c, idx)) << c << " " << i;
    }
    ASSERT_FALSE(start_of(n * b, c, idx)) << "past the last chunk of class " << c;
    ASSERT_FALSE(start_of(kZoneSlotBytes, c, idx)) << c;
    for (std::uint64_t k = 1; k <= 2 * b; ++k)  // below the first chunk: offsets wrap around
      ASSERT_FALSE(start_of(~std::uint64_t{0} - k + 1, c, idx)) << c << " -" << k;
  }
}

TEST(SizeClass, ChunkStartAgreesWithDivisionAtEveryOffsetOfSampledClasses) {
  for (unsigned c : {2u, 9u, 21u, 38u, kClassCount - 1}) {  // 48, 192, 1536, 28672, 256 KiB
    const std::uint64_t b = kClasses[c].chunk_bytes;
    std::uint32_t idx = 0;
    for (std::uint64_t off = 0; off < kZoneSlotBytes; ++off) {
      bool want = off % b == 0 && off / b < kClasses[c].chunk_count;
      ASSERT_EQ(start_of(off, c, idx), want) << c << " " << off;
      if (want) ASSERT_EQ(idx, off / b) << c;
    }
  }
}

}  // namespace
}  // namespace iso
