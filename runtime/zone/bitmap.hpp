// Out-of-band chunk states, two bits per chunk, always read and written 64 bits at a time.
// A word holds 32 chunks; chunk i lives at bits 2*(i%32) .. 2*(i%32)+1 of word i/32.
#pragma once
#include <cstdint>

#include "runtime/config.hpp"

namespace iso {

// Low bit set = not available. The "free" test over a whole word is then ~w & kLowBits.
enum ChunkState : std::uint64_t {
  kChunkFresh = 0b00,   // never handed out since its page was committed: reads as zero
  kChunkInUse = 0b01,
  kChunkFreed = 0b10,   // handed out before, now free: holds old data
  kChunkCanary = 0b11,  // never handed out; holds a canary value
};

inline constexpr std::uint64_t kLowBits = 0x5555555555555555ull;
inline constexpr unsigned kChunksPerWord = 32;

ISO_ALWAYS_INLINE unsigned bitmap_shift(std::uint32_t idx) { return (idx * 2) & 63u; }

ISO_ALWAYS_INLINE std::uint64_t chunk_state(const std::uint64_t* bitmap, std::uint32_t idx) {
  return (bitmap[idx >> 5] >> bitmap_shift(idx)) & 3u;
}

// Sets chunk idx to `state`, returning its previous state.
ISO_ALWAYS_INLINE std::uint64_t set_chunk_state(std::uint64_t* bitmap, std::uint32_t idx,
                                                std::uint64_t state) {
  std::uint64_t w = bitmap[idx >> 5];
  unsigned sh = bitmap_shift(idx);
  bitmap[idx >> 5] = (w & ~(std::uint64_t{3} << sh)) | (state << sh);
  return (w >> sh) & 3u;
}

// Bit 2k of the result is set when chunk k of the word is free (fresh or freed).
ISO_ALWAYS_INLINE std::uint64_t free_chunks_mask(std::uint64_t word) { return ~word & kLowBits; }

}  // namespace iso
