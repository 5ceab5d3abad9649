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

TEST(SizeClass, ReciprocalIndexIsExactAtEveryChunkBoundary) {
  for (unsigned c = 0; c < kClassCount; ++c) {
    std::uint64_t b = kClasses[c].chunk_bytes;
    for (std::uint64_t i = 0; i < kClasses[c].chunk_count; ++i) {
      ASSERT_EQ(chunk_index_of(i * b, c), i) << c;
      ASSERT_EQ(chunk_index_of(i * b + b - 1, c), i) << c;
      if (i * b + 1 < (i + 1) * b) ASSERT_EQ(chunk_index_of(i * b + 1, c), i) << c;
    }
  }
}

TEST(SizeClass, ReciprocalIndexIsExactForEveryOffsetOfSampledClasses) {
  for (unsigned c : {2u, 9u, 21u, 38u}) {  // 48, 192, 1536 (non-powers of two), 28672
    std::uint64_t b = kClasses[c].chunk_bytes;
    for (std::uint64_t off = 0; off < kZoneUserBytes; ++off)
      ASSERT_EQ(chunk_index_of(off, c), off / b) << c << " " << off;
  }
}

}  // namespace
}  // namespace iso
