#include "runtime/zone/bitmap.hpp"

#include <gtest/gtest.h>

namespace iso {
namespace {

TEST(Bitmap, StatesRoundTripWithoutTouchingNeighbours) {
  std::uint64_t words[3] = {};
  for (std::uint32_t i = 0; i < 96; ++i) set_chunk_state(words, i, (i * 7) & 3);
  for (std::uint32_t i = 0; i < 96; ++i) EXPECT_EQ(chunk_state(words, i), (i * 7) & 3u) << i;
  EXPECT_EQ(set_chunk_state(words, 33, kChunkInUse), (33u * 7) & 3);
  EXPECT_EQ(chunk_state(words, 32), (32u * 7) & 3);
  EXPECT_EQ(chunk_state(words, 34), (34u * 7) & 3);
}

TEST(Bitmap, FreeMaskSeesFreshAndFreedButNotInUseOrCanary) {
  std::uint64_t w[1] = {};
  set_chunk_state(w, 0, kChunkFresh);
  set_chunk_state(w, 1, kChunkInUse);
  set_chunk_state(w, 2, kChunkFreed);
  set_chunk_state(w, 3, kChunkCanary);
  for (std::uint32_t i = 4; i < 32; ++i) set_chunk_state(w, i, kChunkInUse);
  EXPECT_EQ(free_chunks_mask(w[0]), (1ull << 0) | (1ull << 4));
}

}  // namespace
}  // namespace iso
